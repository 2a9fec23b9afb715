"""What a run's records contain: the datasets, their columns and types, and where each comes from.

Pure data, imported by both sides of the records: the writer (:mod:`valuegym.records`) casts
each column to the type declared here, and the analysis (:mod:`valuegym.analysis.records`)
knows the datasets by these names. docs/architecture.md ("Record columns") describes them.

Three datasets are common to every run (:data:`CORE_DATASETS`). The rest is extended by what
the parts of a run publish, never listed here:

* an environment's extra columns and datasets come from its ``episode_summary()`` and its
  ``outcome`` dicts; the types of those that may be null in a whole batch are published as
  the env's ``record_columns`` (``{dataset: {column: type}}``, see ``envs/spec.py``);
* a policy's extra decision columns (``Decision.extra``) are typed by its
  ``Policy.record_columns()`` (the affect regulator's ``guilt``, ``satisfaction``).

A column nobody declares takes the type of its values (``int64``, ``float64``, ``bool``,
else ``string``; lists and dicts are stored as JSON text).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

#: Arrow type names (``pyarrow.type_for_alias``); JSON text is ``string``
ColumnType = Literal["int64", "float64", "bool", "string"]
#: who fills a column: the runner, the environment (its outcome or summary), or the policy
Source = Literal["runner", "env", "policy"]
#: ``{dataset: {column: type}}``: what an environment or policy publishes about its columns
ColumnTypes = Mapping[str, Mapping[str, str]]


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    source: Source
    doc: str


@dataclass(frozen=True)
class DatasetSchema:
    name: str
    doc: str
    columns: tuple[Column, ...]

    def types(self) -> dict[str, str]:
        return {column.name: column.type for column in self.columns}


def _columns(source: Source, *specs: tuple[str, ColumnType, str]) -> tuple[Column, ...]:
    return tuple(Column(name, type_, source, doc) for name, type_, doc in specs)


_EPISODE_KEY = _columns(
    "runner",
    ("episode_id", "int64", "the episode's index in the run; (run_dir, episode_id) is its key"),
    ("seed", "int64", "the episode's seed"),
)
_SEAT = _columns(
    "runner",
    ("agent", "string", "the seat"),
    ("policy", "string", "the seat's policy name"),
    ("role", "string", "focal | background"),
)
_IDENTITY = _columns(
    "runner",
    ("model_id", "string", "hash of the policy's identity (the analysis groups by it)"),
    ("model_label", "string", "the policy's readable label"),
)
_LLM = _columns(
    "policy",
    ("model", "string", "the model that answered (null for non-LLM policies)"),
    ("prompt", "string", "the prompt as sent"),
    ("raw_reply", "string", "the reply as received"),
    ("prompt_tokens", "int64", "tokens in the prompt"),
    ("completion_tokens", "int64", "tokens in the reply"),
    ("latency_s", "float64", "seconds the call took"),
    ("cache_hit", "bool", "answered from the response cache"),
    ("llm_calls", "int64", "calls made for this decision (retries included)"),
    ("cost_usd", "float64", "the calls' cost, when the backend prices them"),
    ("persona", "string", "the persona the prompt gave the agent"),
)

DECISIONS = DatasetSchema(
    "decisions",
    "one row per agent per step",
    (
        *_EPISODE_KEY,
        Column("turn", "int64", "runner", "the step, from 1"),
        *_SEAT,
        *_columns(
            "env",
            ("action", "string", "what the environment applied"),
            ("target", "string", "the action's target, if any"),
            ("amount", "float64", "the action's amount, if any"),
            ("outcome", "string", "success | failure | invalid"),
            ("reason", "string", "why, for failure and invalid"),
            ("events", "string", "JSON list of the step's moral events"),
        ),
        *_columns(
            "runner",
            ("valid", "bool", "outcome != invalid: the one source of truth for valid replies"),
            ("reply_parsed", "bool", "the policy's own verdict that it found an action in its reply"),
        ),
        *_IDENTITY,
        *_LLM,
    ),
)
AGENTS = DatasetSchema("agents", "one row per agent per episode", (*_EPISODE_KEY, *_SEAT))
EPISODES = DatasetSchema(
    "episodes",
    "one row per episode",
    (
        *_EPISODE_KEY,
        *_columns(
            "runner",
            ("scenario", "string", "the scenario's name"),
            ("env", "string", "the environment"),
            ("policy", "string", "the focal policy's name"),
            *((c.name, c.type, c.doc) for c in _IDENTITY),
            ("model_identity", "string", "JSON of the focal policy's identity"),
            ("condition", "string", "the regulator condition (none without one)"),
            ("status", "string", "ok | failed"),
            ("error", "string", "the failure, for a failed episode"),
            ("replies", "int64", "the focal agents' decisions"),
            ("valid_replies", "int64", "those with valid"),
            ("valid_reply_rate", "float64", "their ratio"),
            ("llm_calls", "int64", "LLM calls made (cache hits excluded)"),
            ("cache_hits", "int64", "decisions answered from the cache"),
            ("prompt_tokens", "int64", "tokens sent"),
            ("completion_tokens", "int64", "tokens received"),
            ("cost_usd", "float64", "the calls' cost, when priced"),
            ("wall_s", "float64", "seconds the episode took"),
        ),
    ),
)

#: the datasets every run writes; environments add their own (``responses``, ``rounds``, ``choices`` ...)
CORE_DATASETS: dict[str, DatasetSchema] = {d.name: d for d in (DECISIONS, AGENTS, EPISODES)}


def declared_types(*published: ColumnTypes) -> dict[str, dict[str, str]]:
    """``{dataset: {column: type}}``: the core columns' types, then each publisher's (later ones win)."""
    types = {name: schema.types() for name, schema in CORE_DATASETS.items()}
    for columns in published:
        for dataset, declared in columns.items():
            types.setdefault(dataset, {}).update(declared)
    return types


def duplicate_episodes(episode_ids: Iterable[Any], where: object) -> str | None:
    """What is wrong when an episode id occurs twice in ``where``'s ``episodes/`` (None: nothing).

    The writer refuses to resume such a directory and the analysis refuses to read it: its
    records are not exactly what happened, and keeping either row would hide that."""
    seen: set[Any] = set()
    duplicates = sorted({i for i in episode_ids if i in seen or seen.add(i)}, key=str)
    if not duplicates:
        return None
    shown = ", ".join(map(str, duplicates[:10])) + (" ..." if len(duplicates) > 10 else "")
    return (
        f"{where}: episodes/ holds more than one row for episode id {shown} ({len(duplicates)} ids); "
        "two runs wrote into this directory at once, or parts were copied in. Its records are not "
        "exactly what happened: rerun into a new directory (hydra.run.dir=PATH)"
    )
