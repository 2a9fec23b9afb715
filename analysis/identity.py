"""What each record's agent was: the policy identity the runner recorded, and readable names.

The runner writes into every ``episodes`` row the focal policy's ``model_id`` (a hash of its
identity: backend, model name or GGUF file hash, prompt template hash, answer format and every
setting that shapes replies; for scripted agents their name and effective parameters),
``model_label`` (readable) and ``model_identity`` (the identity as JSON); every ``decisions``
row gets its seat's ``model_id`` and ``model_label``. The analysis groups by these, never by
the name of the config file that was run (``policy``): a Gemma GGUF run through
``agent=llm/smollm2 agent.backend.model_path=...`` is not SmolLM2, and ``scripted/tempted``
with ``greed: 0`` is not the one with ``greed: inf``.

:func:`attach` adds the ``model`` column, a display name unique per identity: the label, with
the identity fields that tell apart identities sharing a label appended when needed.

Records written before identities were recorded have none: their ``model`` is the ``policy``
label, and :func:`attach` says so (:attr:`Models.unidentified`).

The cross-model profile (:mod:`valuegym.analysis.profile`) joins an agent's runs across
environments, whose prompt templates necessarily differ: :func:`profile_key` is the identity
without its ``template``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

#: the display-name column the analysis groups by
MODEL = "model"
#: what the runner records per episode (``model_identity`` only in ``episodes``)
IDENTITY_COLUMNS: tuple[str, ...] = ("model_id", "model_label", "model_identity")
#: identity fields that differ between environments for the same agent (left out of :func:`profile_key`)
ENVIRONMENT_SPECIFIC: tuple[str, ...] = ("template",)
#: at most this many differing fields are appended to tell labels apart
_MAX_SHOWN_FIELDS = 3


@dataclass(frozen=True)
class Models:
    """The identities found in a set of records."""

    frame: pd.DataFrame  # the records with ``model`` (and ``model_id``) filled in
    names: dict[str, str]  # model_id -> display name
    identities: dict[str, dict[str, Any] | None]  # model_id -> identity (None: not recorded)
    unidentified: tuple[str, ...]  # policy labels of records written without an identity


def attach(frame: pd.DataFrame, known: Models | None = None) -> Models:
    """``frame`` (episodes or decisions) with a ``model`` display-name column, one per identity.

    ``known``: models already named (from the episodes), whose names are kept, so that a
    decision is named as its episode's model (decisions carry no identity JSON)."""
    frame = frame.copy()
    if "model_id" not in frame.columns:
        frame["model_id"] = pd.NA
    for column in ("model_label", "model_identity"):
        if column not in frame.columns:
            frame[column] = pd.NA
    missing = frame["model_id"].isna()
    unidentified = tuple(sorted(frame.loc[missing, "policy"].dropna().astype(str).unique()))
    # no identity recorded: the policy label is all there is
    frame.loc[missing, "model_id"] = "policy:" + frame.loc[missing, "policy"].astype(str)
    frame.loc[missing, "model_label"] = frame.loc[missing, "policy"]
    first = frame.drop_duplicates("model_id")
    labels = dict(zip(first["model_id"], first["model_label"].astype(str), strict=True))
    identities = {
        model_id: _parse(text)
        for model_id, text in zip(first["model_id"], first["model_identity"], strict=True)
    }
    if known is not None:
        identities |= {i: known.identities[i] for i in labels if i in known.identities}
        taken = set(known.names.values())
        others = display_names(
            {i: label for i, label in labels.items() if i not in known.names},
            identities,
            _environments(frame),
        )
        # a seat's model named like another model (e.g. a background policy): the hash tells them apart
        others = {
            i: f"{name} #{i.removeprefix('policy:')[:6]}" if name in taken else name
            for i, name in others.items()
        }
        names = {i: known.names.get(i) or others[i] for i in labels}
    else:
        names = display_names(labels, identities, _environments(frame))
    frame[MODEL] = frame["model_id"].map(names)
    return Models(frame, names, identities, unidentified)


def ensure(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the ``model`` column (:func:`attach`) unless it has one already."""
    return frame if MODEL in frame.columns else attach(frame).frame


def display_names(
    labels: Mapping[str, str],
    identities: Mapping[str, Mapping[str, Any] | None],
    envs: Mapping[str, set[str]] | None = None,
) -> dict[str, str]:
    """A readable name per id: its label, plus the fields that tell apart ids sharing it.

    Ids that differ only in environment-specific fields (the prompt template) and never ran in
    the same environment share a name: that is one agent run in several environments. ``envs``
    gives each id's environments (default: all ids in one)."""
    by_label: dict[str, list[str]] = {}
    for model_id, label in labels.items():
        by_label.setdefault(label, []).append(model_id)
    names: dict[str, str] = {}
    for label, ids in by_label.items():
        flat = {model_id: _flatten(_common(identities.get(model_id))) for model_id in ids}
        keys = sorted({key for fields in flat.values() for key in fields})
        differing = [key for key in keys if len({json.dumps(flat[i].get(key)) for i in ids}) > 1]
        for model_id in ids:
            shown = ", ".join(
                f"{key.split('.', 1)[-1]}={_short(flat[model_id].get(key))}"  # without params./model.
                for key in differing[:_MAX_SHOWN_FIELDS]
            )
            names[model_id] = f"{label} ({shown})" if shown else label
        for model_id in ids:  # still a name shared within one environment: the hash decides
            rivals = [
                other
                for other in ids
                if other != model_id
                and names[other] == names[model_id]
                and (envs is None or envs.get(other, set()) & envs.get(model_id, set()))
            ]
            if rivals:
                names[model_id] = f"{names[model_id]} #{model_id.removeprefix('policy:')[:6]}"
    return names


def profile_names(models: Models) -> dict[str, str]:
    """Display name -> profile name: an agent's models that differ only by environment-specific
    fields (each environment's prompt template) share one profile."""
    keys = {model_id: profile_key(model_id, models.identities.get(model_id)) for model_id in models.names}
    labels = dict(zip(models.frame["model_id"], models.frame["model_label"].astype(str), strict=False))
    profiles = display_names(
        {keys[i]: labels[i] for i in models.names},
        {keys[i]: _common(models.identities.get(i)) or None for i in models.names},
    )
    return {models.names[i]: profiles[keys[i]] for i in models.names}


def _common(identity: Mapping[str, Any] | None) -> dict[str, Any]:
    """The identity without its environment-specific fields."""
    return {key: value for key, value in (identity or {}).items() if key not in ENVIRONMENT_SPECIFIC}


def profile_key(model_id: str, identity: Mapping[str, Any] | None) -> str:
    """The key that joins one agent's runs across environments: its identity without the
    environment-specific fields (the prompt template); ``model_id`` without a recorded identity."""
    if identity is None:
        return model_id
    text = json.dumps(_common(identity), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def describe(identity: Mapping[str, Any] | None) -> dict[str, str]:
    """The fields of an identity a run list shows: kind, model, file hash, template hash, settings."""
    if identity is None:
        return {
            "kind": "not recorded",
            "model name": "",
            "file sha256": "",
            "template sha256": "",
            "settings": "",
        }
    model = identity.get("model") or {}
    template = identity.get("template") or {}
    params = identity.get("params") or {}
    shown = {key: value for key, value in params.items() if key not in ("personas",)}
    if params.get("personas"):
        shown["personas"] = f"{len(params['personas'])} texts"
    return {
        "kind": str(model.get("type") or identity.get("kind") or "scripted"),
        "model name": str(model.get("name") or identity.get("policy") or ""),
        "file sha256": str(model.get("sha256") or "")[:12],
        "template sha256": (f"{template.get('origin')}: " if template else "")
        + str(template.get("sha256") or "")[:12],
        "settings": ", ".join(f"{key}={_short(value, 40)}" for key, value in sorted(shown.items())),
    }


def _environments(frame: pd.DataFrame) -> dict[str, set[str]] | None:
    if "env" not in frame.columns:
        return None
    return {str(i): set(group.astype(str)) for i, group in frame.groupby("model_id")["env"]}


def _parse(text: object) -> dict[str, Any] | None:
    if text is None or (not isinstance(text, str) and pd.isna(text)):
        return None
    return json.loads(str(text))


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        items: Iterable[tuple[str, Any]] = node.items()
        flat: dict[str, Any] = {}
        for key, value in items:
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): node}


def _short(value: Any, limit: int = 20) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
