"""Records on disk: Parquet datasets written atomically in parts, plus the run manifest.

A run directory holds one folder per dataset (``decisions/``, ``agents/``, ``episodes/``
and environment extras such as ``responses/``); each finished batch of episodes adds one
part file to each, written to a temporary name and renamed, so an interrupted run leaves
only whole parts. ``pandas.read_parquet(run_dir / "episodes")`` reads a dataset.

Every part of a dataset has the same schema (pyarrow reads a folder with the first
part's schema): the schema is kept in ``<dataset>/_schema.json`` (pyarrow ignores
``_`` files), each batch is cast to it, and a column first seen later is back-filled
into the older parts. Column types come from :mod:`valuegym.record_schema` (the core
columns) and from what the environment and the policies publish; a column nobody
declares takes the type of its values.

One process writes a run directory at a time (the runner holds its lock,
``runner/rundir.py``); temporary files still carry the writer's pid and a random
suffix (:func:`temporary_name`), so no two writers ever share one.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from valuegym import record_schema
from valuegym.record_schema import declared_types


class DuplicateEpisodeError(ValueError):
    """A dataset holds two episode rows for one episode id: the run's records are not exactly
    what happened (two writers, or a copy merged in), and nothing may silently keep one."""


def temporary_name(target: Path) -> Path:
    """A temporary file beside ``target``, unique to this writer (pid and a random suffix)."""
    return target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def write_atomically(target: Path, data: bytes | str) -> None:
    """Write ``target`` whole or not at all: a unique temporary file, then a rename."""
    tmp = temporary_name(target)
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def check_unique_episodes(episode_ids: Iterable[Any], where: Path | str) -> None:
    """Raise :class:`DuplicateEpisodeError` naming ``where`` if an episode id occurs twice."""
    problem = record_schema.duplicate_episodes(episode_ids, where)
    if problem is not None:
        raise DuplicateEpisodeError(problem)


def _array(values: list[Any], type_: pa.DataType) -> pa.Array:
    """An Arrow column; cells that Arrow cannot take as they are (dicts, lists) become JSON."""
    try:
        return pa.array(values, type=type_, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array([_cell(v) for v in values], type=type_, from_pandas=False)


def _python_type(values: Iterable[Any]) -> pa.DataType:
    """The Arrow type for a column of plain Python values."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.string()
    if all(issubclass(k, bool | np.bool_) for k in kinds):
        return pa.bool_()
    if all(issubclass(k, int | float | np.integer | np.floating) and not issubclass(k, bool) for k in kinds):
        return pa.int64() if all(issubclass(k, int | np.integer) for k in kinds) else pa.float64()
    return pa.string()


def _cell(value: Any) -> Any:
    """Lists and dicts are stored as JSON text; numpy scalars as Python scalars."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str)
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value


class Dataset:
    """One Parquet dataset folder with a stable schema."""

    def __init__(self, path: Path, declared: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.declared = dict(declared or {})  # column -> Arrow type name, for columns first seen
        self._schema_file = path / "_schema.json"

    def schema(self) -> dict[str, str]:
        if not self._schema_file.exists():
            return {}
        return json.loads(self._schema_file.read_text())

    def _save_schema(self, schema: Mapping[str, str]) -> None:
        write_atomically(self._schema_file, json.dumps(dict(schema), indent=1))

    def parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet")) if self.path.exists() else []

    def write(self, rows: list[Mapping[str, Any]], part_name: str) -> Path | None:
        """Append ``rows`` as one new part (atomically); returns its path."""
        if not rows:
            return None
        self.path.mkdir(parents=True, exist_ok=True)
        stored = self.schema()
        columns = list(stored)
        for row in rows:
            columns += [c for c in row if c not in stored and c not in columns]
        data = {c: [row.get(c) for row in rows] for c in columns}
        types = {c: pa.type_for_alias(t) for c, t in stored.items()}
        changed: list[str] = []
        for column in columns:
            if column not in types:
                declared = self.declared.get(column)
                types[column] = pa.type_for_alias(declared) if declared else _python_type(data[column])
                changed.append(column)
            elif types[column] == pa.int64() and _python_type(data[column]) == pa.float64():
                types[column] = pa.float64()  # a count that turned out fractional: widen, never truncate
                changed.append(column)
        table = pa.table({c: _array(data[c], types[c]) for c in columns})
        if changed and stored:
            self._migrate(types)
        self._save_schema({c: str(types[c]) for c in columns})
        target = self.path / part_name
        self._rewrite(target, table)
        return target

    def _migrate(self, types: Mapping[str, pa.DataType]) -> None:
        """Bring existing parts to the full schema: add missing columns as nulls, widen types."""
        for part in self.parts():
            table = pq.read_table(part)
            arrays = [
                table.column(c).cast(t) if c in table.column_names else pa.nulls(table.num_rows, type=t)
                for c, t in types.items()
            ]
            self._rewrite(part, pa.table(arrays, names=list(types)))

    def _rewrite(self, part: Path, table: pa.Table) -> None:
        tmp = temporary_name(part)
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, part)
        finally:
            tmp.unlink(missing_ok=True)

    def read(self, columns: list[str] | None = None) -> pa.Table | None:
        if not self.parts():
            return None
        return pq.read_table(self.path, columns=columns)

    def drop_rows(self, column: str, values: set[Any]) -> int:
        """Remove rows whose ``column`` is in ``values`` (rewriting only the parts that have any)."""
        removed = 0
        for part in self.parts():
            table = pq.read_table(part)
            keep = [v not in values for v in table.column(column).to_pylist()]
            if all(keep):
                continue
            removed += keep.count(False)
            table = table.filter(pa.array(keep))
            if table.num_rows:
                self._rewrite(part, table)
            else:
                part.unlink()
        return removed


class RecordStore:
    """The datasets of one run directory."""

    def __init__(
        self, run_dir: str | Path, column_types: Mapping[str, Mapping[str, str]] | None = None
    ) -> None:
        """``column_types``: ``{dataset: {column: type}}`` (:func:`valuegym.record_schema.declared_types`;
        by default the core columns' only)."""
        self.run_dir = Path(run_dir)
        self.column_types = declared_types() if column_types is None else column_types
        self._counter = 0

    def dataset(self, name: str) -> Dataset:
        return Dataset(self.run_dir / name, self.column_types.get(name))

    def write_batch(self, batch: Mapping[str, list[Mapping[str, Any]]]) -> None:
        """Write one batch of finished episodes: ``{"decisions": rows, "episodes": rows, ...}``.

        The ``episodes`` part is written last: an episode counts as finished only once
        its episode row exists, so a crash between parts never loses or duplicates one.
        """
        self._counter += 1
        part = f"part-{time.time_ns():020d}-{os.getpid()}-{self._counter:04d}.parquet"
        for name in sorted(batch, key=lambda n: n == "episodes"):
            self.dataset(name).write(list(batch[name]), part)

    def finished_episodes(self) -> dict[int, str]:
        """``episode_id -> status`` of the episodes already recorded; :class:`DuplicateEpisodeError`
        if one id has two rows."""
        table = self.dataset("episodes").read(columns=["episode_id", "status"])
        if table is None:
            return {}
        ids = table.column("episode_id").to_pylist()
        check_unique_episodes(ids, self.run_dir)
        return dict(zip(ids, table.column("status").to_pylist(), strict=True))

    def _per_episode_datasets(self) -> list[Dataset]:
        """Every dataset of the run whose rows belong to an episode."""
        folders = sorted(p for p in self.run_dir.iterdir() if (p / "_schema.json").exists())
        return [d for d in map(Dataset, folders) if "episode_id" in d.schema()]

    def forget_episodes(self, episode_ids: set[int]) -> None:
        """Remove every row of these episodes (failed ones, before they are run again)."""
        if episode_ids:
            for dataset in self._per_episode_datasets():
                dataset.drop_rows("episode_id", episode_ids)

    def remove_orphans(self, finished: set[int]) -> None:
        """Drop rows of episodes without an episode row (a crash between parts of a batch)."""
        for dataset in self._per_episode_datasets():
            table = dataset.read(columns=["episode_id"])
            orphans = set(table.column("episode_id").to_pylist()) - finished if table is not None else set()
            if orphans:
                dataset.drop_rows("episode_id", orphans)
