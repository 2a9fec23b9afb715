"""One writer per run directory, and the checks that may refuse a run before it writes anything.

A run *claims* its directory (:func:`claim`) before it writes a byte there:

1. the refusal checks run, reading only: the stored manifest's experiment identity against
   this run's (:func:`identity_differences`), then any further checks the caller passes
   (input validation, secrets: ``checks``). A refusal raises :class:`RunRefusedError` and
   leaves every file of the directory as it was;
2. the run takes an exclusive OS lock (``fcntl.flock``) on ``run.lock`` in the directory,
   held until the process ends. The kernel releases it when the process dies, even by
   ``kill -9``, so a lock is never stale. A second run on a held directory fails at once
   with the holder's pid, host and start time, which the holder wrote into the lock file;
3. under the lock the identity is checked again (a run that claimed the directory between
   1 and 2 may have started other records there), and only then does the run write: the
   holder's line into ``run.lock``, then its provenance (``config.yaml``, ``.hydra/``),
   manifest and records.

The lock file is never removed: removing it would let a third process lock a new file
while a second still waits on the old one.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from valuegym.runner.experiment import Experiment

LOCK_FILE = "run.lock"
MANIFEST_FILE = "manifest.json"


class RunRefusedError(RuntimeError):
    """The run was refused before it wrote anything into its directory."""


class RunDirectoryConflictError(RunRefusedError):
    """The run directory already holds records of a different experiment."""


class RunDirectoryLockedError(RunRefusedError):
    """Another process is writing into the run directory."""


def identity_differences(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: stored X, new Y`` for every key of the two experiment identities that differs."""
    keys = sorted(set(stored) | set(new))
    missing = "(not set)"
    return [
        f"{key}: stored {json.dumps(stored.get(key, missing))}, new {json.dumps(new.get(key, missing))}"
        for key in keys
        if stored.get(key, missing) != new.get(key, missing)
    ]


def check_identity(run_dir: Path, experiment: Experiment) -> None:
    """Refuse a directory whose manifest records another experiment (reads only)."""
    path = run_dir / MANIFEST_FILE
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text())
    except ValueError as error:
        raise RunDirectoryConflictError(
            f"{path} is not readable JSON ({error}): the directory's records cannot be matched to this "
            "configuration; choose a new directory with hydra.run.dir=PATH"
        ) from error
    stored_id = previous.get("experiment_id")
    if stored_id in (experiment.identity(), experiment.legacy_identity()):
        return
    stored = previous.get("identity")
    if isinstance(stored, Mapping):
        differences = identity_differences(stored, experiment.identity_settings())
        detail = "; ".join(differences) or "(the keys agree but the hashes do not: a newer valuegym?)"
    else:
        detail = (
            "its manifest was written before valuegym recorded identities key by key; compare its "
            "config.yaml with this configuration"
        )
    raise RunDirectoryConflictError(
        f"{run_dir} holds records of another configuration (experiment id {stored_id}, this one is "
        f"{experiment.identity()}): {detail}. Rerun with the stored values, or choose a new directory "
        "with hydra.run.dir=PATH (see docs/run-promises.md for what the identity covers)"
    )


@dataclass(frozen=True)
class Holder:
    """Who holds a run directory's lock (the line the holder wrote into ``run.lock``)."""

    pid: int | None
    host: str
    started: str

    def describe(self) -> str:
        if self.pid is None:
            return "a process that has not written its pid, host and start time yet"
        return f"pid {self.pid} on {self.host}, started {self.started}"

    @classmethod
    def read(cls, text: str) -> Holder:
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["started"]))
        except (ValueError, KeyError, TypeError):
            return cls(None, "", "")

    @classmethod
    def this_process(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), datetime.now(UTC).isoformat(timespec="seconds"))


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/run.lock``, held until :meth:`release` or process exit."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock without waiting; :class:`RunDirectoryLockedError` if another process holds it.

        Nothing is written to the file yet (:meth:`record_holder` does, once the run is accepted).
        """
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = Holder.read(handle.read())
            handle.close()
            raise RunDirectoryLockedError(
                f"{self.path.parent} is being written by another run ({holder.describe()}); a directory "
                "has one writer at a time. Wait for that run to end (or stop it), or choose another "
                "directory with hydra.run.dir=PATH"
            ) from None
        self._file = handle

    def record_holder(self) -> None:
        assert self._file is not None, "acquire() first"
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(Holder.this_process().__dict__) + "\n")
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the last descriptor releases the flock
            self._file = None


def claim(run_dir: Path, experiment: Experiment, checks: Iterable[Callable[[], None]] = ()) -> RunLock:
    """Check, lock and accept ``run_dir`` for ``experiment`` (module docstring); returns the held lock.

    ``checks`` are further refusal checks (each raises to refuse); like the identity check they
    run before anything is written. On any refusal the directory is left as it was (a directory
    that does not exist yet is not created).
    """
    check_identity(run_dir, experiment)
    for check in checks:
        check()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir)
    lock.acquire()
    try:
        check_identity(run_dir, experiment)  # another run may have claimed it since the first check
        lock.record_holder()
    except BaseException:
        lock.release()
        raise
    return lock
