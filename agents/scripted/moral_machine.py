"""Scripted Moral Machine judges: known preferences to test the AMCE estimator against.

They read only ``info["situation"]`` (the dilemma as the environment describes it: both cases
in presentation order, each with the group that dies and the group spared) and answer with the
structured action ``{"choice": "case_1" | "case_2"}``.

* :class:`UtilityPolicy` chooses with a logistic utility over the attributes Awad et al.
  measure, so its true preferences are known and the estimator should recover their signs
  and order.
* :class:`FirstCasePolicy` always chooses the case presented first: the position-bias probe.
  With presentation order randomised independently of the attributes, its AMCEs are near zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from valuegym.agents.policy import AgentContext, Decision, SyncPolicy, Turn
from valuegym.agents.scripted.generic import RandomStream

#: per-character trait scores; the group's score is the mean over its characters
TRAIT_SCORES: dict[str, tuple[str, dict[str | None, float]]] = {
    # preference -> (the situation's trait key, score of each trait value; others score 0)
    "species": ("species", {"human": 1.0}),
    "gender": ("gender", {"female": 1.0}),
    "age": ("age", {"young": 1.0, "elderly": -1.0}),
    "fitness": ("body", {"fit": 1.0, "large": -1.0}),
    "status": ("status", {"high": 1.0, "low": -1.0}),
}
#: a pedestrian group's law score: the difference between lawful and unlawful is one unit
LAW_SCORES: dict[str, float] = {"green": 0.5, "red": -0.5, "none": 0.0}


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


#: a log-odds weight of the utility agent
Weight = Annotated[float, Field(ge=-100, le=100)]


class UtilityPolicy(SyncPolicy):
    """Chooses Case 1 with probability ``logistic(logit)``, a utility difference (:meth:`logit`).

    Every weight is a log-odds shift (0: indifferent; negative: the opposite preference):

    * ``species``, ``gender``, ``age``, ``fitness``, ``status``: per unit of the spared group's
      mean trait score minus the killed group's (human 1 / pet 0; female 1; young 1 / adult 0 /
      elderly -1; fit 1 / large -1; high status 1 / low -1);
    * ``number``: per extra character spared;
    * ``law``: sparing pedestrians crossing on green rather than on red;
    * ``relation``: sparing pedestrians rather than passengers;
    * ``intervention``: letting the car stay in its lane rather than swerve (inaction);
    * ``conformity``: per share of the panel that chose this case in the previous
      deliberation round (0: ignores the panel).

    The defaults follow the signs and roughly the order of Awad et al.'s human AMCEs. The
    random draw is made once per dilemma (from the agent's episode seed), so without
    conformity the choice does not change across deliberation rounds.
    """

    name = "scripted/utility"

    def __init__(
        self,
        species: Weight = 1.35,
        age: Weight = 0.8,
        law: Weight = 0.75,
        number: Weight = 0.6,
        status: Weight = 0.5,
        fitness: Weight = 0.25,
        gender: Weight = 0.25,
        relation: Weight = 0.2,
        intervention: Weight = 0.12,
        conformity: Weight = 0.0,
    ) -> None:
        self.weights = {
            "species": float(species),
            "age": float(age),
            "law": float(law),
            "number": float(number),
            "status": float(status),
            "fitness": float(fitness),
            "gender": float(gender),
            "relation": float(relation),
            "intervention": float(intervention),
        }
        self.conformity = float(conformity)

    def parameters(self) -> dict[str, Any]:
        return {**self.weights, "conformity": self.conformity}

    def initial_state(self, context: AgentContext) -> dict[str, Any]:
        return {"stream": RandomStream.of(context), "dilemma": None, "draw": 0.0}

    def step(self, turn: Turn) -> tuple[Decision, Any]:
        situation = turn.info["situation"]
        state = dict(turn.state)
        if state["dilemma"] != situation["dilemma"]:  # a new dilemma: a new random draw
            state["dilemma"] = situation["dilemma"]
            state["draw"], state["stream"] = state["stream"].draw(lambda rng: float(rng.random()))
        first, second = situation["cases"]
        choose_first = state["draw"] < _logistic(self.logit(situation))
        chosen = first if choose_first else second
        return Decision(action={"choice": chosen["choice"]}), state

    def logit(self, situation: Mapping[str, Any]) -> float:
        """Log-odds of choosing Case 1 over Case 2."""
        first = situation["cases"][0]
        w = self.weights
        logit = self.group_value(first["spared"]) - self.group_value(first["dies"])
        logit += w["intervention"] if first["car_action"] == "stay" else -w["intervention"]
        shares = {case["choice"]: 0.0 for case in situation["cases"]}
        previous = situation["panel_previous_choices"]
        for entry in previous:
            if entry["choice"] in shares:
                shares[entry["choice"]] += 1.0 / len(previous)
        second = situation["cases"][1]
        return logit + self.conformity * (shares[first["choice"]] - shares[second["choice"]])

    def group_value(self, group: Mapping[str, Any]) -> float:
        """What sparing ``group`` is worth, in log-odds."""
        w = self.weights
        characters = group["characters"]
        size = sum(entry["count"] for entry in characters)
        value = w["number"] * size
        for preference, (trait, scores) in TRAIT_SCORES.items():
            mean = sum(scores.get(entry[trait], 0.0) * entry["count"] for entry in characters) / size
            value += w[preference] * mean
        if group["role"] == "pedestrians":
            value += w["relation"] + w["law"] * LAW_SCORES[group["signal"]]
        return value


class FirstCasePolicy(SyncPolicy):
    """Always chooses the case presented first, whatever it says."""

    name = "scripted/first"

    def initial_state(self, context: AgentContext) -> None:
        return None

    def step(self, turn: Turn) -> tuple[Decision, Any]:
        first = turn.info["situation"]["cases"][0]
        return Decision(action={"choice": first["choice"]}), turn.state
