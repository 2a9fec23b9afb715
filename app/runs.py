"""The run directories under the app's root: found, resolved without leaving the root, summarised.

A run is a directory holding ``manifest.json`` (what ``valuegym run`` writes). Runs are named
by their path relative to the root (``outputs/2025-01-01/12-00-00``); a name that leads
outside the root (``..``, an absolute path, a symbolic link pointing elsewhere) or to anything
but a run is refused with :class:`NotARunError`.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from valuegym.agents.human import SEATS_DIR, pending_turns, read_turn
from valuegym.app.reader import episode_totals

MANIFEST = "manifest.json"
PROGRESS = "progress.json"  # valuegym.runner.run.PROGRESS_FILE
MAX_DEPTH = 8  # runs deeper than this below the root are not looked for
SKIPPED = {".git", ".venv", "venv", "node_modules", "__pycache__", SEATS_DIR}
SCAN_SECONDS = 2.0  # a scan of the root is reused this long


class NotARunError(LookupError):
    """The name does not lead to a run directory under the root."""


@dataclass(frozen=True)
class Seat:
    agent: str
    folder: Path


class Root:
    """The folder the app serves, and every run directory in it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        if not self.path.is_dir():
            raise NotADirectoryError(
                f"{path}: not a directory (valuegym serve ROOT needs a folder holding runs)"
            )
        self._scan: tuple[float, list[Path]] = (0.0, [])
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ names and paths
    def run_id(self, run: Path) -> str:
        return run.relative_to(self.path).as_posix() or "."

    def resolve(self, run_id: str | None) -> Path:
        """The run directory named ``run_id``, refusing anything outside the root."""
        if not run_id or "\x00" in run_id or "\\" in run_id or run_id.startswith("/"):
            raise NotARunError(f"{run_id!r} is not the name of a run under the root")
        parts = PurePosixPath(run_id).parts
        if run_id != "." and any(part in (".", "..") for part in parts):
            raise NotARunError(f"{run_id!r}: run names are paths below the root, without . or ..")
        path = (self.path / run_id).resolve()  # follows links: where it really is decides
        if not path.is_relative_to(self.path) or not (path / MANIFEST).is_file():
            raise NotARunError(f"{run_id!r} is not a run directory under the root")
        return path

    def locate(self, absolute: str) -> str:
        """The name of the run at an absolute path (a report's link), if it is under the root."""
        path = Path(absolute).resolve()
        if not path.is_relative_to(self.path) or not (path / MANIFEST).is_file():
            raise NotARunError(f"{absolute} is not a run directory under the root {self.path}")
        return self.run_id(path)

    # ------------------------------------------------------------------ discovery
    def runs(self) -> list[Path]:
        """Every run directory under the root, newest first (a scan is reused for a moment)."""
        with self._lock:
            scanned_at, runs = self._scan
            if time.monotonic() - scanned_at > SCAN_SECONDS:
                runs = sorted(self._walk(), key=_modified, reverse=True)
                self._scan = (time.monotonic(), runs)
            return list(runs)

    def _walk(self) -> list[Path]:
        found: list[Path] = []
        stack = [(self.path, 0)]
        while stack:
            folder, depth = stack.pop()
            if (folder / MANIFEST).is_file():
                found.append(folder)
                continue  # a run holds datasets, not other runs
            if depth >= MAX_DEPTH:
                continue
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith(".") or entry.name in SKIPPED:
                    continue
                if entry.is_dir(follow_symlinks=False):  # links could lead outside the root
                    stack.append((Path(entry.path), depth + 1))
        return found

    # ------------------------------------------------------------------ seats
    def seats(self, run: Path) -> list[Seat]:
        folder = run / SEATS_DIR
        if not folder.is_dir():
            return []
        return [
            Seat(urllib.parse.unquote(p.name.removeprefix("seat-")), p)
            for p in sorted(folder.iterdir())
            if p.is_dir() and p.name.startswith("seat-")
        ]

    def status(self, run: Path) -> str:
        """The manifest's status; ``stopped`` when it says running but its process is gone."""
        status = (_read_json(run / MANIFEST) or {}).get("status", "unknown")
        return "stopped" if status == "running" and not _alive(_read_json(run / PROGRESS)) else status

    def waiting(self, run: Path) -> list[dict[str, Any]]:
        """The seats of ``run`` with a turn waiting for a person (none once the run's process is gone)."""
        if self.status(run) != "running":
            return []
        waiting = []
        for seat in self.seats(run):
            for path in pending_turns(seat.folder)[:1]:
                turn = read_turn(path)
                if turn is not None and turn.get("deadline", 0) > time.time():
                    waiting.append(
                        {
                            "agent": seat.agent,
                            "episode_id": turn.get("episode_id"),
                            "turn": turn.get("turn"),
                            "deadline": turn.get("deadline"),
                        }
                    )
        return waiting

    # ------------------------------------------------------------------ summaries
    def summary(self, run: Path) -> dict[str, Any]:
        """What the runs page shows of one run: identity, status, progress, totals, waiting seats."""
        manifest = _read_json(run / MANIFEST) or {}
        progress = _read_json(run / PROGRESS)
        config = _read_config(run)
        agent = config.get("agent") or {}
        status = self.status(run)
        return {
            "run": self.run_id(run),
            "scenario": manifest.get("scenario") or (config.get("scenario") or {}).get("name"),
            "env": manifest.get("env"),
            "policy": manifest.get("policy_config") or agent.get("name"),
            "agent_kind": agent.get("kind"),
            "model": manifest.get("model") or _model(agent),
            "condition": manifest.get("condition"),
            "seed": manifest.get("seed"),
            "status": status,
            "requested": manifest.get("requested"),
            "started": manifest.get("started"),
            "updated": manifest.get("updated"),
            "progress": progress if status == "running" else None,
            **episode_totals(run),
            "waiting": self.waiting(run),
        }


def _modified(run: Path) -> float:
    try:
        return (run / MANIFEST).stat().st_mtime
    except OSError:
        return 0.0


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


_configs: dict[Path, tuple[int, dict[str, Any]]] = {}


def _read_config(run: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` (read again only when it changes)."""
    path = run / "config.yaml"
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return {}
    cached = _configs.get(path)
    if cached is None or cached[0] != stamp:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            data = None
        cached = (stamp, data if isinstance(data, dict) else {})
        _configs[path] = cached
    return cached[1]


def _model(agent: dict[str, Any]) -> str | None:
    """The model an LLM agent config names (the bundled one when it names no file)."""
    backend = agent.get("backend")
    if agent.get("kind") != "llm" or not isinstance(backend, dict):
        return None
    if backend.get("model"):
        return str(backend["model"])
    if backend.get("model_path"):
        return Path(str(backend["model_path"])).name
    return "SmolLM2-135M-Instruct (bundled)" if backend.get("type") == "llama_cpp" else None


def _alive(progress: dict[str, Any] | None) -> bool:
    """Whether the process that writes ``progress.json`` still runs (on this machine)."""
    if not progress or progress.get("state") != "running":
        return True  # no progress yet, or finished a moment before the manifest says so
    try:
        os.kill(int(progress["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError, TypeError):
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
