"""Reading a run's records for the app, straight from the Parquet part files (never copied).

A dataset is a folder of part files (``valuegym/records.py``), each holding the rows of a batch
of episodes. Each part's footer says which episode ids it holds (row-group statistics of
``episode_id``); the app keeps that range per part, so reading one episode opens only the
parts that can hold it, and a 100,000-episode run costs no more to replay than a small one.
Everything read is cached per part file (path, size, modification time): parts are written
once and replaced whole, so a changed part is a new key, and a running run's new parts are
read as they appear.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

EPISODE_ID = "episode_id"
PartKey = tuple[str, int, int]  # path, size, mtime_ns

_lock = threading.Lock()
_ranges: dict[PartKey, tuple[float, float]] = {}
_tables: dict[PartKey, pa.Table] = {}
_episode_tables: dict[Path, tuple[tuple[PartKey, ...], pa.Table]] = {}


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


def _table(key: PartKey) -> pa.Table:
    cached = _tables.get(key)
    if cached is None:
        cached = pq.read_table(key[0])
        with _lock:
            _tables[key] = cached
    return cached


def _concat(tables: list[pa.Table]) -> pa.Table | None:
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def episode_rows(run: Path, dataset: str, episode_id: int) -> list[dict[str, Any]]:
    """The rows of one episode in one dataset, reading only the parts whose range holds it."""
    tables = []
    for key in _parts(run / dataset):
        low, high = _range(key)
        if low <= episode_id <= high:
            table = pq.read_table(key[0], filters=[(EPISODE_ID, "==", episode_id)])
            if table.num_rows:
                tables.append(table)
    table = _concat(tables)
    return [] if table is None else clean(table.to_pylist())


def episode(run: Path, episode_id: int) -> dict[str, Any] | None:
    """Every record of one episode: its row, its agents, its decisions and the env's extras."""
    rows = {name: episode_rows(run, name, episode_id) for name in datasets(run)}
    if not rows.get("episodes"):
        return None
    decisions = sorted(rows.pop("decisions", []), key=lambda r: r.get("turn") or 0)
    return {
        "episode": rows.pop("episodes")[0],
        "agents": rows.pop("agents", []),
        "decisions": decisions,
        "extras": rows,
    }


def episodes_table(run: Path) -> pa.Table | None:
    """The run's whole ``episodes`` dataset, sorted by episode id (cached per set of parts)."""
    keys = tuple(_parts(run / "episodes"))
    cached = _episode_tables.get(run)
    if cached is None or cached[0] != keys:
        table = _concat([_table(key) for key in keys])
        if table is None:
            return None
        cached = (keys, table.sort_by(EPISODE_ID))
        with _lock:
            folder = str(run / "episodes")
            for key in [k for k in _tables if str(Path(k[0]).parent) == folder and k not in keys]:
                del _tables[key]  # a part replaced since (records migrate or drop rows)
            _episode_tables[run] = cached
    return cached[1]


def episode_page(
    run: Path, offset: int, limit: int, equal: dict[str, str], invalid_only: bool
) -> dict[str, Any]:
    """A page of the episodes list; ``equal`` filters columns by value (``status=failed``)."""
    table = episodes_table(run)
    if table is None:
        return {"total": 0, "rows": [], "columns": []}
    for column, value in equal.items():
        if column not in table.column_names:
            raise KeyError(f"no episode column {column!r}; the run has {', '.join(table.column_names)}")
        table = table.filter(pc.equal(pc.cast(table[column], pa.string()), value))
    if invalid_only and "valid_reply_rate" in table.column_names:
        table = table.filter(pc.less(table["valid_reply_rate"], 1.0))
    page = table.slice(offset, limit)
    return {"total": table.num_rows, "rows": clean(page.to_pylist()), "columns": table.column_names}


def neighbours(run: Path, episode_id: int) -> dict[str, int | None]:
    """The episode ids before and after ``episode_id`` in the run."""
    table = episodes_table(run)
    if table is None:
        return {"previous": None, "next": None}
    ids = table[EPISODE_ID]
    before = pc.max(ids.filter(pc.less(ids, episode_id))).as_py()
    after = pc.min(ids.filter(pc.greater(ids, episode_id))).as_py()
    return {"previous": before, "next": after}


def episode_totals(run: Path) -> dict[str, Any]:
    """Episodes ok and failed, LLM calls, tokens and cost, summed over the ``episodes`` dataset."""
    table = episodes_table(run)
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
