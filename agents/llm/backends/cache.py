"""A persistent response cache for model calls, in one SQLite file, and the wrapper that
serves calls from it (:class:`CachedBackend`).

A rerun of an experiment asks the same questions with the same seeds, so it is
answered from here: zero model calls, the same replies and token counts, hence the
same records. The key is a SHA-256 of the backend type, its cache identity (e.g. server
URL, model and JSON mode: ``LLMBackend.cache_identity``) and everything in the request
that shapes the reply (messages, temperature, max_tokens, seed, JSON schema), or for a
scoring (``answer_format: choice``) the messages and the options; scores are stored as a
reply whose text is their JSON.

Many processes share one file (Ray workers, joblib jobs): the database runs in WAL
mode, every statement is its own short transaction, and each process and thread opens
its own connection. WAL needs a local file system; on a cluster give each node its own
file (``VALUEGYM_CACHE_DIR``) or use a node-local path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from valuegym.agents.llm.backends.base import (
    BackendError,
    BackendWrapper,
    Completion,
    CompletionRequest,
    LLMBackend,
    OptionScores,
    ScoringRequest,
)

#: bump when the key or the stored fields change meaning (old entries then never match)
CACHE_FORMAT = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    finish_reason TEXT,
    latency_s REAL NOT NULL,
    created_at REAL NOT NULL
)
"""

#: free bytes the cache's disk must have at preflight
MIN_FREE_BYTES = 50_000_000


class CacheError(BackendError):
    """The response cache file cannot be read or written; the message names it and the fix."""


def _cache_error(path: Path, error: BaseException | str) -> CacheError:
    return CacheError(
        f"the response cache {path} cannot be used: {error}. Fix: free space or move the file away "
        "(a cache holds only replies that can be asked again), or give another file "
        "(agent.cache.path=... or VALUEGYM_CACHE_DIR), or run without it (agent.cache.enabled=false)"
    )


def default_cache_path() -> Path:
    """``$VALUEGYM_CACHE_DIR/llm_cache.sqlite``, by default under ``~/.cache/valuegym``."""
    directory = os.environ.get("VALUEGYM_CACHE_DIR") or "~/.cache/valuegym"
    return Path(directory).expanduser() / "llm_cache.sqlite"


class ResponseCache:
    """Stored replies by request key. Picklable: a copy reopens the file in its own process."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        self._local = threading.local()

    @staticmethod
    def key(
        backend_kind: str, identity: Mapping[str, str], request: CompletionRequest | ScoringRequest
    ) -> str:
        """The key of ``request`` to the backend ``backend_kind`` with ``identity`` (its ``cache_identity``)."""
        fields: dict[str, Any] = {
            "format": CACHE_FORMAT,
            "backend": backend_kind,
            "identity": identity,
            **request.key_fields(),
        }
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def check(self) -> None:
        """Open the file and read and write it once (preflight): a corrupt file, an unwritable
        folder or a full disk is a :class:`CacheError` before any episode runs."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.path.parent).free
            if free < MIN_FREE_BYTES:
                raise _cache_error(self.path, f"its disk has only {free} bytes free")
            connection = self._connection()
            connection.execute("SELECT key FROM replies LIMIT 1").fetchall()
            probe = f"preflight-{os.getpid()}-{time.time_ns()}"
            connection.execute(
                "INSERT INTO replies VALUES (?, '', '', ?, 0, 0, NULL, 0, 0)", (probe, "x" * 4096)
            )
            connection.execute("DELETE FROM replies WHERE key = ?", (probe,))
        except (sqlite3.Error, OSError) as error:
            self.close()
            raise _cache_error(self.path, f"{type(error).__name__}: {error}") from None

    def get(self, key: str) -> Completion | None:
        try:
            row = (
                self._connection()
                .execute(
                    "SELECT text, prompt_tokens, completion_tokens, finish_reason, latency_s "
                    "FROM replies WHERE key = ?",
                    (key,),
                )
                .fetchone()
            )
        except (sqlite3.Error, OSError) as error:
            raise _cache_error(self.path, f"{type(error).__name__}: {error}") from None
        if row is None:
            return None
        text, prompt_tokens, completion_tokens, finish_reason, latency_s = row
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=latency_s,
            finish_reason=finish_reason,
        )

    def put(self, key: str, backend_kind: str, model: str, completion: Completion) -> None:
        try:
            self._put(key, backend_kind, model, completion)
        except (sqlite3.Error, OSError) as error:
            raise _cache_error(self.path, f"{type(error).__name__}: {error}") from None

    def _put(self, key: str, backend_kind: str, model: str, completion: Completion) -> None:
        self._connection().execute(
            "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                backend_kind,
                model,
                completion.text,
                completion.prompt_tokens,
                completion.completion_tokens,
                completion.finish_reason,
                completion.latency_s,
                time.time(),
            ),
        )

    def close(self) -> None:
        """Close this thread's connection (others close when their thread or process ends)."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork, so it is remembered with the pid that opened it.
        if getattr(self._local, "pid", None) != os.getpid() or self._local.connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit, so each statement is one short transaction;
            # timeout: wait for another process's write instead of failing at once.
            connection = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(_SCHEMA)
            self._local.connection = connection
            self._local.pid = os.getpid()
        return self._local.connection


class CachedBackend(BackendWrapper):
    """Serves repeated requests from a :class:`ResponseCache`.

    A hit returns the stored reply and token counts with ``cache_hit=True``, ``calls=0``
    and the lookup time as latency. ``refresh=True`` ignores stored replies but stores new ones.
    """

    def __init__(self, inner: LLMBackend, cache: ResponseCache, *, refresh: bool = False) -> None:
        super().__init__(inner)
        self.cache = cache
        self.refresh = refresh

    async def check(self) -> None:
        self.cache.check()  # a corrupt or unwritable cache fails the preflight, naming the file
        await self.inner.check()

    async def complete(self, request: CompletionRequest) -> Completion:
        key = self.cache.key(self.kind, self.cache_identity, request)
        if not self.refresh:
            start = time.perf_counter()
            stored = self.cache.get(key)
            if stored is not None:
                return dataclasses.replace(
                    stored, latency_s=time.perf_counter() - start, cache_hit=True, calls=0
                )
        completion = await self.inner.complete(request)
        self.cache.put(key, self.kind, self.model_id, completion)
        return completion

    async def score(self, request: ScoringRequest) -> OptionScores:
        """Scores are stored as a completion whose text is their JSON (``finish_reason="scores"``)."""
        key = self.cache.key(self.kind, self.cache_identity, request)
        if not self.refresh:
            start = time.perf_counter()
            stored = self.cache.get(key)
            if stored is not None and stored.finish_reason == "scores":
                values = json.loads(stored.text)
                return OptionScores(
                    logprobs=tuple(values["logprobs"]),
                    tokens=tuple(values["tokens"]),
                    prompt_tokens=stored.prompt_tokens,
                    latency_s=time.perf_counter() - start,
                    cache_hit=True,
                    calls=0,
                )
        scores = await self.inner.score(request)
        text = json.dumps({"logprobs": scores.logprobs, "tokens": scores.tokens})
        stored = Completion(text, scores.prompt_tokens, sum(scores.tokens), scores.latency_s, "scores")
        self.cache.put(key, self.kind, self.model_id, stored)
        return scores

    async def close(self) -> None:
        self.cache.close()
        await self.inner.close()
