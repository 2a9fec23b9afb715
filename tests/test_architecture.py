"""The dependency rules of docs/architecture.md, enforced on the source tree.

Every module's imports are read from its syntax tree (function-level and ``TYPE_CHECKING``
imports included), with module names from the ``[tool.setuptools.package-dir]`` mapping of
pyproject.toml (the folder ``envs/`` is ``valuegym.envs``). An AST check rather than
import-linter: import-linter's graph (grimp) walks the installed package's own folder, and
``valuegym.envs`` and its siblings live outside ``valuegym/``, so it would not see them.
Names imported by string at run time (``ENVIRONMENTS``, ``KINDS``, ``"module:Class"``
registries) are outside what any static check sees; those registries live in the packages
they point into.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Contract:
    """Modules under ``source`` may import of ``valuegym`` only what ``allowed`` names (a name
    allows the module and its submodules; ``=name`` that module alone), and never a module
    under ``forbidden`` (third-party ones too)."""

    name: str
    source: str
    allowed: tuple[str, ...]
    forbidden: tuple[str, ...] = ()


CONTRACTS = (
    Contract(
        "environments import only themselves (nothing of agents, runner, training, scenarios, analysis, app, CLI)",
        "valuegym.envs",
        allowed=("valuegym.envs",),
    ),
    Contract(
        "agents import the policy interface, each other and what environments publish (envs/spec.py), "
        "never an environment module nor RLlib's environment machinery",
        "valuegym.agents",
        allowed=("valuegym.agents", "=valuegym.envs.spec"),
        forbidden=("ray.rllib.env",),
    ),
    Contract(
        "scenarios reach environments only through their registry (valuegym.envs: ENVIRONMENTS, the Params "
        "it names), never an environment module, agents, the runner or the analysis",
        "valuegym.scenarios",
        allowed=("valuegym.scenarios", "=valuegym.envs"),
    ),
    Contract(
        "the analysis reads records only: itself, the record schema and the Moral Machine's design tables",
        "valuegym.analysis",
        allowed=("valuegym.analysis", "=valuegym.record_schema", "=valuegym.envs.moral_machine.design"),
    ),
    Contract(
        "the Moral Machine's design tables (which the analysis reads) are pure data",
        "valuegym.envs.moral_machine.design",
        allowed=("=valuegym.envs.moral_machine.characters",),
    ),
    Contract(
        "the Moral Machine's characters are pure data",
        "valuegym.envs.moral_machine.characters",
        allowed=(),
    ),
    Contract(
        "the web app reads records and the human seat's files, never environment code or the runner",
        "valuegym.app",
        allowed=("valuegym.app", "=valuegym.agents.human", "=valuegym.agents.llm.networking"),
    ),
    Contract(
        "the record schema is pure data",
        "valuegym.record_schema",
        allowed=("=valuegym.record_schema",),
    ),
)


def package_dirs(root: Path) -> dict[str, Path]:
    """``{package: folder}`` from pyproject.toml's package-dir mapping."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    return {name: root / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def modules(root: Path) -> dict[str, Path]:
    """Every module of the installed tree: ``{dotted name: file}``."""
    mapping = package_dirs(root)
    found: dict[str, Path] = {}
    for package, folder in sorted(mapping.items(), key=lambda item: -len(item[0])):
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            # a nested folder mapped to its own package (none today) is named by the longer mapping
            found.setdefault(name, path)
    return found


def imports(name: str, path: Path, known: Mapping[str, Path]) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every import in the module ``name`` (relative ones resolved;
    ``from package import submodule`` counts the submodule)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                if f"{module}.{alias.name}" in known:
                    yield node.lineno, f"{module}.{alias.name}"


def _covers(pattern: str, module: str) -> bool:
    if pattern.startswith("="):
        return module == pattern[1:]
    return module == pattern or module.startswith(pattern + ".")


def violations(root: Path, contracts: tuple[Contract, ...] = CONTRACTS) -> list[str]:
    """Every import that breaks a contract, as ``file:line: module imports X (contract)``."""
    known = modules(root)
    found = []
    for name, path in known.items():
        for contract in contracts:
            if not _covers(contract.source, name):
                continue
            for line, imported in imports(name, path, known):
                ours = imported == "valuegym" or imported.startswith("valuegym.")
                if (ours and not any(_covers(p, imported) for p in contract.allowed)) or any(
                    _covers(p, imported) for p in contract.forbidden
                ):
                    where = path.relative_to(root)
                    found.append(f"{where}:{line}: {name} imports {imported} (rule: {contract.name})")
    return found


def test_the_source_tree_keeps_every_dependency_rule() -> None:
    assert violations(ROOT) == []


def test_every_contract_governs_modules_that_exist() -> None:
    known = modules(ROOT)
    for contract in CONTRACTS:
        assert any(_covers(contract.source, name) for name in known), contract.name


def _tree(root: Path, files: Mapping[str, str]) -> Path:
    """A minimal copy of the layout: pyproject's mapping and the given files."""
    (root / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "broken"),
    [
        ({"envs/bad.py": "from valuegym.agents.policy import Policy\n"}, "environments import only"),
        ({"envs/bad.py": "def f():\n    import valuegym.runner.episode\n"}, "environments import only"),
        ({"agents/bad.py": "from valuegym.envs import make_parallel\n"}, "agents import"),
        ({"agents/bad.py": "from valuegym.envs.decide_sim import Params\n"}, "agents import"),
        ({"agents/rl/bad.py": "from ray.rllib.env.multi_agent_env import MultiAgentEnv\n"}, "agents import"),
        ({"agents/rl/bad.py": "from ...envs import decide_sim\n"}, "agents import"),
        ({"analysis/bad.py": "from valuegym.envs import spec\n"}, "the analysis reads records only"),
        (
            {"analysis/bad.py": "from valuegym.records import RecordStore\n"},
            "the analysis reads records only",
        ),
        ({"scenarios/bad.py": "from valuegym.envs.dilemma import Params\n"}, "scenarios reach"),
        ({"app/bad.py": "from valuegym.runner import run\n"}, "the web app"),
    ],
)
def test_a_planted_violation_is_found(tmp_path: Path, files: dict[str, str], broken: str) -> None:
    found = violations(_tree(tmp_path, files))
    assert len(found) == 1 and "bad.py:" in found[0] and broken in found[0], found


def test_what_the_rules_allow_passes(tmp_path: Path) -> None:
    allowed = {
        "envs/good.py": "from valuegym.envs.spec import MoralEvent\nfrom . import spec\n",
        "agents/good.py": "from valuegym.agents.policy import Policy\nfrom valuegym.envs.spec import EVENT_KINDS\n",
        "agents/rl/good.py": "from ray.rllib.core.columns import Columns\nfrom .module import ACTION_MASK\n",
        "scenarios/good.py": "from valuegym.envs import ENVIRONMENTS\n",
        "analysis/good.py": "from valuegym.record_schema import CORE_DATASETS\nimport pandas\n",
        "training/good.py": "from valuegym.envs.decide_sim import Params\n",  # the glue may
    }
    assert violations(_tree(tmp_path, allowed)) == []


def test_every_top_level_package_installs_as_valuegym_dot_its_folder() -> None:
    """The layout rule a newcomer can guess: folder ``X`` is ``valuegym.X`` (``valuegym/`` is the root)."""
    mapping = package_dirs(ROOT)
    for name, folder in mapping.items():
        assert folder.parent == ROOT and name == (
            "valuegym" if folder.name == "valuegym" else f"valuegym.{folder.name}"
        )
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} - {"bench"}  # bench: scripts
    assert packages == {folder.name for folder in mapping.values()}


def test_every_subpackage_is_listed_for_installation() -> None:
    """A folder with ``__init__.py`` missing from ``[tool.setuptools] packages`` would be left out of a
    wheel (an editable install hides it)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {name for name, path in modules(ROOT).items() if path.name == "__init__.py"}
    assert found == listed
