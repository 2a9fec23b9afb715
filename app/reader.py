"""Reading a run's records for the app, straight from the Parquet part files (never copied).

A dataset is a folder of part files (``valuegym/records.py``); one batch of episodes adds a
part of the same name to every dataset. The app keeps, per run, a light index of the
``episodes`` dataset (episode id, status and the columns the pages sum or filter on, read in one
multithreaded scan) and each part's range of episode ids (its footer's row-group statistics).
Reading one episode then opens only the part of that name in each dataset (or, should a part
lack it, the parts whose range holds it), so a 100,000-episode run costs no more to replay than
a small one. Everything is cached per part file (path, size, modification time): parts are
written once and replaced whole, so a changed part is a new key, and a running run's new parts
are read as they appear.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

EPISODE_ID = "episode_id"
#: episode columns the index holds (those a run has); others are added when a filter names them
INDEX_COLUMNS = (
    "episode_id",
    "status",
    "valid_reply_rate",
    "llm_calls",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
)

PartKey = tuple[str, int, int]  # path, size, mtime_ns

_lock = threading.Lock()
_ranges: dict[PartKey, tuple[float, float]] = {}


@dataclass
class _Index:
    keys: tuple[PartKey, ...]
    table: pa.Table  # sorted by episode id


_indexes: dict[Path, _Index] = {}


def datasets(run: Path) -> list[str]:
    """The run's dataset folders (each keeps ``_schema.json``, see ``valuegym/records.py``)."""
    return sorted(p.name for p in run.iterdir() if (p / "_schema.json").is_file())


def _parts(folder: Path) -> list[PartKey]:
    keys = []
    for path in sorted(folder.glob("part-*.parquet")):
        try:
            stat = path.stat()
        except FileNotFoundError:  # replaced between the listing and now
            continue
        keys.append((str(path), stat.st_size, stat.st_mtime_ns))
    return keys


def _range(key: PartKey) -> tuple[float, float]:
    """The smallest and largest episode id in a part, from its footer alone."""
    cached = _ranges.get(key)
    if cached is not None:
        return cached
    low, high = math.inf, -math.inf
    try:
        metadata = pq.read_metadata(key[0])
        column = metadata.schema.to_arrow_schema().get_field_index(EPISODE_ID)
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(column).statistics if column >= 0 else None
            if stats is None or not stats.has_min_max:
                low, high = -math.inf, math.inf  # no statistics: the part must be read
                break
            low, high = min(low, stats.min), max(high, stats.max)
    except (OSError, pa.ArrowException):
        low, high = -math.inf, math.inf
    with _lock:
        _ranges[key] = (low, high)
    return low, high


def _read(paths: list[str], filters: Any = None, columns: list[str] | None = None) -> pa.Table | None:
    """The rows of some part files (one multithreaded scan), or None when there are none."""
    if not paths:
        return None
    table = pads.dataset(paths, format="parquet").to_table(columns=columns, filter=filters)
    return table if table.num_rows else None


def _rows_of(run: Path, dataset: str, ids: list[int]) -> pa.Table | None:
    """The rows of episodes ``ids`` in one dataset: the parts named like the episodes' parts first."""
    wanted = pc.field(EPISODE_ID).isin(ids)
    folder = run / dataset
    names = {Path(key[0]).name for key in _parts_holding(run / "episodes", ids)}
    table = _read([str(folder / name) for name in sorted(names) if (folder / name).is_file()], wanted)
    found = set() if table is None else set(table[EPISODE_ID].to_pylist())
    if found >= set(ids):
        return table
    missing = sorted(set(ids) - found)  # a part renamed or rewritten by other tools: look by range
    more = _read(
        [key[0] for key in _parts_holding(folder, missing) if Path(key[0]).name not in names],
        pc.field(EPISODE_ID).isin(missing),
    )
    tables = [t for t in (table, more) if t is not None]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def _parts_holding(folder: Path, ids: list[int]) -> list[PartKey]:
    low, high = min(ids), max(ids)
    return [
        key
        for key in _parts(folder)
        if (r := _range(key))[0] <= high and r[1] >= low and any(r[0] <= i <= r[1] for i in ids)
    ]


def episode(run: Path, episode_id: int) -> dict[str, Any] | None:
    """Every record of one episode: its row, its agents, its decisions and the env's extras."""
    rows = {}
    for name in datasets(run):
        table = _rows_of(run, name, [episode_id])
        rows[name] = [] if table is None else clean(table.to_pylist())
    if not rows.get("episodes"):
        return None
    decisions = sorted(rows.pop("decisions", []), key=lambda r: r.get("turn") or 0)
    return {
        "episode": rows.pop("episodes")[0],
        "agents": rows.pop("agents", []),
        "decisions": decisions,
        "extras": rows,
    }


def episode_index(run: Path, columns: tuple[str, ...] = ()) -> pa.Table | None:
    """The run's episodes (the index columns, plus ``columns``), sorted by episode id."""
    keys = tuple(_parts(run / "episodes"))
    if not keys:
        return None
    index = _indexes.get(run)
    if index is None or index.keys != keys or any(c not in index.table.column_names for c in columns):
        schema = pq.read_schema(keys[-1][0]).names
        kept = index.table.column_names if index is not None and index.keys == keys else []
        wanted = [c for c in dict.fromkeys([*INDEX_COLUMNS, *kept, *columns]) if c in schema]
        table = _read([key[0] for key in keys], columns=wanted)
        if table is None:
            return None
        ids = table[EPISODE_ID].to_numpy()
        if not np.all(ids[1:] >= ids[:-1]):  # parts hold batches in completion order
            table = table.take(np.argsort(ids, kind="stable"))
        index = _Index(keys, table)
        with _lock:
            _indexes[run] = index
    return index.table


def episode_page(
    run: Path, offset: int, limit: int, equal: dict[str, str], invalid_only: bool
) -> dict[str, Any]:
    """A page of the episodes list; ``equal`` filters columns by value (``status=failed``)."""
    table = episode_index(run, tuple(equal))
    if table is None:
        return {"total": 0, "rows": [], "columns": []}
    for column, value in equal.items():
        if column not in table.column_names:
            known = pq.read_schema(_parts(run / "episodes")[-1][0]).names
            raise KeyError(f"no episode column {column!r}; the run has {', '.join(known)}")
        table = table.filter(pc.equal(pc.cast(table[column], pa.string()), value))
    if invalid_only and "valid_reply_rate" in table.column_names:
        table = table.filter(
            pc.or_kleene(pc.less(table["valid_reply_rate"], 1.0), pc.equal(table["status"], "failed"))
        )
    ids = table[EPISODE_ID].slice(offset, limit).to_pylist()
    rows = _rows_of(run, "episodes", ids) if ids else None
    by_id = {row[EPISODE_ID]: row for row in ([] if rows is None else clean(rows.to_pylist()))}
    columns = [] if rows is None else rows.column_names
    return {"total": table.num_rows, "rows": [by_id[i] for i in ids if i in by_id], "columns": columns}


def neighbours(run: Path, episode_id: int) -> dict[str, int | None]:
    """The episode ids before and after ``episode_id`` in the run."""
    table = episode_index(run)
    if table is None:
        return {"previous": None, "next": None}
    ids = table[EPISODE_ID]
    before = pc.max(ids.filter(pc.less(ids, episode_id))).as_py()
    after = pc.min(ids.filter(pc.greater(ids, episode_id))).as_py()
    return {"previous": before, "next": after}


def episode_totals(run: Path) -> dict[str, Any]:
    """Episodes ok and failed, LLM calls, tokens and cost, summed over the ``episodes`` dataset."""
    table = episode_index(run)
    if table is None:
        return {"ok": 0, "failed": 0, "calls": None, "tokens": None, "cost_usd": None}
    status = table["status"] if "status" in table.column_names else None
    failed = int(pc.sum(pc.equal(status, "failed")).as_py() or 0) if status is not None else 0

    def total(column: str) -> float | None:
        return pc.sum(table[column]).as_py() if column in table.column_names else None

    tokens = [total("prompt_tokens"), total("completion_tokens")]
    return {
        "ok": table.num_rows - failed,
        "failed": failed,
        "calls": total("llm_calls"),
        "tokens": sum(t for t in tokens if t is not None) if any(t is not None for t in tokens) else None,
        "cost_usd": total("cost_usd"),
    }


def clean(value: Any) -> Any:
    """Rows as strict JSON: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    return json.dumps(clean(value), default=str, allow_nan=False).encode()
