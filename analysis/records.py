"""Reading run records from disk: the analysis's only input.

A *run directory* is what one Hydra job writes (``valuegym run``): ``config.yaml``,
``manifest.json`` and one folder of Parquet part files per dataset: the core ones
(``decisions/``, ``agents/``, ``episodes/``; :mod:`valuegym.record_schema`) and those its
environment adds (``responses/``, ``rounds/``, ``choices/``, ``dilemmas/`` ...), which are
read by name like the core ones.
A *multirun directory* (``valuegym run -m``) holds numbered job directories ``0/``,
``1/``, ... each of which is a run directory.

:func:`find_runs` turns the paths a user gives into the run directories they contain,
and :func:`load` reads one dataset from all of them, reading only the columns asked for
and adding two columns that say where each row came from:

* ``run_dir``: the run directory's absolute path. ``episode_id`` is unique only within a
  run, so ``(run_dir, episode_id)`` is the key of an episode across runs.
* ``job``: a short readable label of the run: ``<multirun>/<job number>`` for a job of a
  multirun directory, otherwise the run directory's name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from valuegym.record_schema import CORE_DATASETS, duplicate_episodes

#: the datasets every run directory holds; environments add others (see docs/architecture.md, "Records")
DATASETS: tuple[str, ...] = tuple(CORE_DATASETS)
_DATASET_NAME = re.compile(r"[a-z][a-z0-9_]*")

#: columns :func:`load` adds to every dataset
SOURCE_COLUMNS: tuple[str, ...] = ("run_dir", "job")


class RecordsError(ValueError):
    """Records that cannot be analysed; the message says which path or column is wrong."""


@dataclass(frozen=True)
class Run:
    """One run directory found on disk."""

    path: Path
    job: str  # readable label, unique among the runs of one multirun directory


def is_run_dir(path: Path) -> bool:
    """True when ``path`` holds a manifest, a core dataset folder or any folder of Parquet parts."""
    return (
        (path / "manifest.json").is_file()
        or any((path / name).is_dir() for name in DATASETS)
        or any(_is_dataset(folder) for folder in path.iterdir())
    )


def _is_dataset(folder: Path) -> bool:
    """A folder of Parquet parts named like a dataset (job folders of a multirun are numbers)."""
    return (
        folder.is_dir() and bool(_DATASET_NAME.fullmatch(folder.name)) and any(folder.glob("part-*.parquet"))
    )


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """The run directories given directly or as jobs of multirun directories, in order.

    Jobs of a multirun directory come in job-number order. A path that is neither a run
    directory nor a multirun directory raises :class:`RecordsError`.
    """
    runs: list[Run] = []
    for given in paths:
        path = Path(given).resolve()
        if not path.is_dir():
            raise RecordsError(f"{given}: no such directory (expected a run or multirun directory)")
        if is_run_dir(path):
            runs.append(Run(path=path, job=path.name))
            continue
        jobs = sorted(
            (child for child in path.iterdir() if child.name.isdigit() and is_run_dir(child)),
            key=lambda child: int(child.name),
        )
        if not jobs:
            raise RecordsError(
                f"{given}: not a run directory (no manifest.json and no dataset folder such as "
                f"{', '.join(DATASETS)}) and not a multirun directory (no numbered job "
                "directories 0/, 1/, ... holding runs)"
            )
        runs.extend(Run(path=job, job=f"{path.name}/{job.name}") for job in jobs)
    if not runs:
        raise RecordsError("no paths given: expected one or more run or multirun directories")
    paths_found = [run.path for run in runs]
    for path in paths_found:
        if paths_found.count(path) > 1:
            raise RecordsError(f"run directory given twice: {path}")
    return runs


def datasets_of(runs: Sequence[Run]) -> list[str]:
    """The datasets ``runs`` hold (folders of Parquet parts), core ones first."""
    found = {folder.name for run in runs for folder in run.path.iterdir() if _is_dataset(folder)}
    return [*(name for name in DATASETS if name in found), *sorted(found - set(DATASETS))]


def has_dataset(runs: Sequence[Run], dataset: str) -> bool:
    """True when at least one of ``runs`` holds ``dataset``."""
    return any(_parts(run, dataset) is not None for run in runs)


def columns_of(runs: Sequence[Run], dataset: str) -> list[str]:
    """The columns ``dataset`` has in any of ``runs`` (without reading any rows)."""
    names: dict[str, None] = {}  # ordered set
    for run in runs:
        parts = _parts(run, dataset)
        if parts is not None:
            names.update(dict.fromkeys(_unified(parts).schema.names))
    return list(names)


def load(
    paths: Iterable[str | Path] | Sequence[Run],
    dataset: str,
    columns: Sequence[str] | None = None,
    optional: Sequence[str] = (),
) -> pd.DataFrame:
    """Rows of ``dataset`` from every run found in ``paths``, plus ``run_dir`` and ``job``.

    ``paths`` are run or multirun directories (or :class:`Run` objects from
    :func:`find_runs`). Only ``columns`` are read (all when ``None``); a requested column
    that a run's dataset lacks raises :class:`RecordsError`, as does a dataset that none
    of the runs holds. ``optional`` columns are read from the runs that have them and are
    null in the rows of the runs that lack them; one that no run has is left out. Runs
    without the dataset are skipped: an analysis may mix environments, and only Moral
    Machine runs have ``responses/``. Columns come in the order requested (``columns``,
    then ``optional``), the source columns last.
    """
    if not _DATASET_NAME.fullmatch(dataset):
        raise RecordsError(
            f"{dataset!r} is not a dataset name (a folder of the run such as {', '.join(DATASETS)})"
        )
    given = list(paths)
    runs = given if given and all(isinstance(item, Run) for item in given) else find_runs(given)
    tables: list[pa.Table] = []
    for run in runs:
        parts = _parts(run, dataset)
        if parts is not None:
            check_unique_episodes(run)
            tables.append(_read(run, dataset, _unified(parts), columns, optional))
    if not tables:
        where = ", ".join(str(run.path) for run in runs)
        raise RecordsError(
            f"no {dataset}/ records in {where}; they hold {', '.join(datasets_of(runs)) or 'no dataset'}"
        )
    # "permissive": columns some runs lack (optional ones, or any when reading all) become
    # null there, and a column all-null in one run takes its type from the others
    table = pa.concat_tables(tables, promote_options="permissive")
    read = [name for name in table.column_names if name not in SOURCE_COLUMNS]
    if columns is not None:
        read = [name for name in dict.fromkeys([*columns, *optional]) if name in read]
    return table.select([*read, *SOURCE_COLUMNS]).to_pandas()


def check_unique_episodes(run: Run) -> None:
    """Raise :class:`RecordsError` naming the run if its ``episodes/`` holds two rows for one
    episode id: its records are not exactly what happened, and keeping either row would hide it."""
    parts = _parts(run, "episodes")
    if parts is None:
        return
    problem = duplicate_episodes(
        parts.to_table(columns=["episode_id"]).column("episode_id").to_pylist(), run.path
    )
    if problem is not None:
        raise RecordsError(problem)


def _parts(run: Run, dataset: str) -> pads.Dataset | None:
    """The dataset's Parquet parts in ``run``; ``None`` without a folder or parts in it."""
    directory = run.path / dataset
    if not directory.is_dir():
        return None
    parts = pads.dataset(directory, format="parquet")
    return parts if any(parts.get_fragments()) else None


def _unified(parts: pads.Dataset) -> pads.Dataset:
    """``parts`` with one schema over all part files.

    Parts written by other tools or versions may disagree on a column's type when it was
    all-null in one batch (e.g. LLM fields); "permissive" promotes null to the real type.
    """
    schema = pa.unify_schemas(
        [fragment.physical_schema for fragment in parts.get_fragments()], promote_options="permissive"
    )
    return parts.replace_schema(schema)


def _read(
    run: Run, dataset: str, parts: pads.Dataset, columns: Sequence[str] | None, optional: Sequence[str]
) -> pa.Table:
    """The requested columns of the run's ``dataset`` (its ``parts``), plus the :data:`SOURCE_COLUMNS`."""
    names = parts.schema.names
    wanted: list[str] | None = None
    if columns is not None:
        missing = [name for name in columns if name not in names]
        if missing:
            raise RecordsError(
                f"{run.path / dataset}: no column {', '.join(repr(name) for name in missing)}; "
                f"it has {', '.join(names)}"
            )
        wanted = list(dict.fromkeys([*columns, *(name for name in optional if name in names)]))
    table = parts.to_table(columns=wanted)
    for name, value in zip(SOURCE_COLUMNS, (str(run.path), run.job), strict=True):
        table = table.append_column(name, pa.repeat(pa.scalar(value, pa.string()), table.num_rows))
    return table
