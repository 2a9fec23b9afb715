"""Scripted agents for the dilemma environment (``envs/dilemma/``).

:class:`ValueRankerPolicy` has a strict order of values and chooses, in every dilemma, the
option that does best on its most important value at stake: the option's profile on the
ranking (+1 upholds, -1 violates, 0 neither, per ranked value) is compared lexicographically,
so a lower-ranked value only breaks ties of every higher-ranked one. Options that tie on the
whole ranking are decided by a draw from the agent's episode seed (never by presentation order,
which would mix position bias into its preferences). It ignores the other agents' choices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from difflib import get_close_matches
from typing import Annotated, Any

from pydantic import Field

from valuegym.agents.policy import AgentContext, Decision, SyncPolicy, Turn
from valuegym.agents.scripted.generic import RandomStream


class ValueRankerPolicy(SyncPolicy[RandomStream]):
    """Chooses the option that best upholds ``ranking`` (most important value first)."""

    name = "scripted/value_ranker"

    def __init__(self, ranking: Annotated[list[str], Field(max_length=1_000)]) -> None:
        ranking = list(ranking)
        if not ranking:
            raise ValueError("value_ranker needs a ranking: a list of values, most important first")
        repeated = sorted({v for v in ranking if ranking.count(v) > 1})
        if repeated:
            raise ValueError(f"value_ranker ranking names a value more than once: {', '.join(repeated)}")
        self.ranking = tuple(ranking)

    def initial_state(self, context: AgentContext) -> RandomStream:
        return RandomStream.of(context)

    def step(self, turn: Turn) -> tuple[Decision, Any]:
        situation = turn.info["situation"]
        self._check_ranking(situation["values"])
        options = situation["options"]
        profiles = [self.profile(option) for option in options]
        best = max(profiles)
        tied = [option for option, profile in zip(options, profiles, strict=True) if profile == best]
        stream: RandomStream = turn.state
        if len(tied) == 1:
            return Decision(action={"choice": tied[0]["id"]}), stream
        index, stream = stream.draw(lambda rng: int(rng.integers(len(tied))))
        return Decision(action={"choice": tied[index]["id"]}), stream

    def profile(self, option: Mapping[str, Any]) -> tuple[int, ...]:
        """+1 / -1 / 0 per ranked value: the option upholds / violates / leaves it alone."""
        upholds, violates = set(option["upholds"]), set(option["violates"])
        return tuple(1 if v in upholds else -1 if v in violates else 0 for v in self.ranking)

    def _check_ranking(self, known: Sequence[str]) -> None:
        """A value the dilemma set never uses is a typo, not a preference: say so."""
        unknown = [v for v in self.ranking if v not in known]
        if unknown:
            hints = []
            for value in unknown:
                close = get_close_matches(value, list(known), n=1)
                hints.append(f"{value!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(
                f"value_ranker ranking names values the dilemma set does not use: {', '.join(hints)}; "
                f"the set's values are: {', '.join(known)}"
            )
