"""Scripted agents, selectable as ``agent=scripted/NAME``.

Scripted behaviour is specific to an environment's situation, so each environment has
its own module; ``random`` (a uniformly random valid action) works everywhere.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from difflib import get_close_matches
from functools import cache
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from valuegym.agents.policy import Policy
from valuegym.agents.scripted import coevolution, decide_sim, dilemma, generic, moral_machine

GENERIC: dict[str, type[Policy]] = {"random": generic.RandomPolicy}

#: env_name -> scripted name -> policy class
BY_ENV: dict[str, dict[str, type[Policy]]] = {
    "decide_sim": {
        "idle": decide_sim.IdlePolicy,
        "ethical": decide_sim.EthicalPolicy,
        "exploitative": decide_sim.ExploitativePolicy,
        "context_dependent": decide_sim.ContextDependentPolicy,
        "cooperative": decide_sim.CooperativePolicy,
        "tempted": decide_sim.TemptedPolicy,
    },
    "moral_machine": {"utility": moral_machine.UtilityPolicy, "first": moral_machine.FirstCasePolicy},
    "coevolution": {
        "static": coevolution.StaticPolicy,
        "follower": coevolution.FollowerPolicy,
        "extrapolative": coevolution.ExtrapolativePolicy,
        "approval_max": coevolution.ApprovalMaxPolicy,
        "oracle": coevolution.OraclePolicy,
    },
    "dilemma": {"value_ranker": dilemma.ValueRankerPolicy},
}


def available(env_name: str) -> list[str]:
    return sorted({*GENERIC, *BY_ENV.get(env_name, {})})


def policy_class(env_name: str, name: str) -> type[Policy]:
    """The class of the scripted policy ``name`` for ``env_name`` (a ``ValueError`` listing the choices)."""
    found = BY_ENV.get(env_name, {}).get(name) or GENERIC.get(name)
    if found is None:
        close = get_close_matches(name, available(env_name), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"no scripted agent {name!r} for environment {env_name!r}{hint}; "
            f"available: {', '.join(available(env_name))}"
        )
    return found


def make_scripted(env_name: str, name: str, params: Mapping[str, Any] | None = None) -> Policy:
    """The scripted policy ``name`` for ``env_name``, built with ``params`` (validated first)."""
    cls = policy_class(env_name, name)
    return cls(**validated_params(cls, params or {}))


@cache
def params_model(policy_class: type) -> type[BaseModel]:
    """A pydantic model of the keyword arguments ``policy_class`` takes: the types and bounds of
    its ``__init__`` (``Annotated[float, Field(ge=0, le=1)]``), unknown keys refused, ``inf`` and
    ``nan`` refused unless a parameter's ``Field`` allows them."""
    hints = get_type_hints(policy_class.__init__, include_extras=True)
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(policy_class.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (hints.get(name, Any), default)
    return create_model(
        f"{policy_class.__name__}Params",
        __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
        **fields,
    )


def validated_params(policy_class: type, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` checked against :func:`params_model` (a ``ValueError`` naming each
    ``agent.params.KEY``, what it accepts and what it got)."""
    model = params_model(policy_class)
    try:
        validated = model.model_validate(dict(params))
    except ValidationError as error:
        problems = []
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"])
            if item["type"] == "extra_forbidden":
                close = get_close_matches(key, list(model.model_fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                accepted = ", ".join(model.model_fields) or "none"
                problems.append(f"agent.params.{key}: unknown parameter{hint}; accepted: {accepted}")
                continue
            field = model.model_fields.get(str(item["loc"][0]))
            accepted = f" (accepts {_accepted(field)})" if field is not None else ""
            given = item.get("input")
            if isinstance(given, str) and given.lower().lstrip(".+-") in ("inf", "nan"):
                accepted += "; on the command line infinity is written inf, not .inf"
            problems.append(f"agent.params.{key}: {item['msg']}, got {item.get('input')!r}{accepted}")
        raise ValueError(f"{policy_class.name}: " + "; ".join(problems)) from None
    return {name: getattr(validated, name) for name in validated.model_fields_set}


def _accepted(field: Any) -> str:
    """A field's type and bounds as a reader says them: ``float, >= 0, <= 1``."""
    annotation = field.annotation
    text = getattr(annotation, "__name__", str(annotation).replace("typing.", ""))
    bounds = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    for item in field.metadata:
        for attribute, symbol in bounds.items():
            if getattr(item, attribute, None) is not None:
                text += f", {symbol} {getattr(item, attribute)}"
    return text


def make_from_config(cfg: Mapping[str, Any], env_name: str) -> Policy:
    return make_scripted(env_name, cfg["name"], cfg.get("params"))
