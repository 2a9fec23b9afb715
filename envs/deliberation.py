"""When each dilemma and deliberation round happens in an episode of a panel deciding dilemmas.

The Moral Machine (``moral_machine.py``) and the YAML dilemmas (``dilemma.py``) share one turn
structure: an episode asks a sequence of dilemmas, and each dilemma takes ``1 +
deliberation_rounds`` steps. In the first round every agent chooses; in each deliberation round
every agent sees the panel's choices of the previous round and chooses again. Only the last
round of a dilemma is *binding*. ``max_cycles`` (PettingZoo's convention) may cut an episode
short: it then ends truncated, and only the dilemmas it reaches are drawn.

:class:`DeliberationSchedule` is that arithmetic, as a function of the number of steps taken;
the environments keep their own dilemmas, answers and rules.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeliberationSchedule:
    """``dilemmas`` dilemmas of ``1 + deliberation_rounds`` steps each, capped at ``max_cycles`` steps."""

    dilemmas: int
    deliberation_rounds: int
    max_cycles: int | None = None

    def __post_init__(self) -> None:
        if self.dilemmas < 1:
            raise ValueError(f"a schedule needs at least one dilemma, got dilemmas={self.dilemmas}")
        if self.deliberation_rounds < 0:
            raise ValueError(f"deliberation_rounds must be >= 0, got {self.deliberation_rounds}")
        if self.max_cycles is not None and self.max_cycles < 1:
            raise ValueError(f"max_cycles must be >= 1 or None, got {self.max_cycles}")

    @property
    def rounds_per_dilemma(self) -> int:
        return 1 + self.deliberation_rounds

    @property
    def total_steps(self) -> int:
        """The steps of an episode that asks every dilemma."""
        return self.dilemmas * self.rounds_per_dilemma

    @property
    def max_steps(self) -> int:
        """The steps an episode lasts: every dilemma, or fewer when ``max_cycles`` says so."""
        return min(self.total_steps, self.max_cycles or self.total_steps)

    @property
    def dilemmas_reached(self) -> int:
        """How many dilemmas an episode of ``max_steps`` steps starts (a cut-short one counts)."""
        return -(-self.max_steps // self.rounds_per_dilemma)

    def is_over(self, steps: int) -> bool:
        """The episode has ended after ``steps`` steps (it ran its course or reached ``max_cycles``)."""
        return steps >= self.max_steps

    def is_complete(self, steps: int) -> bool:
        """Every dilemma was decided: an episode that is over terminates if complete, else truncates."""
        return steps >= self.total_steps

    def dilemma_index(self, steps: int) -> int:
        """The dilemma decided after ``steps`` steps (the last one reached once the episode is over)."""
        return min(steps // self.rounds_per_dilemma, self.dilemmas_reached - 1)

    def round_index(self, steps: int) -> int:
        """The round of its dilemma decided after ``steps`` steps (once over: the last round played)."""
        return min(steps, self.max_steps - 1) % self.rounds_per_dilemma

    def is_binding(self, round_index: int) -> bool:
        """Only a dilemma's last round counts: its choices have consequences."""
        return round_index == self.rounds_per_dilemma - 1

    def has_previous_round(self, steps: int) -> bool:
        """After ``steps`` steps the panel is deliberating: a round of the same dilemma came before."""
        return not self.is_over(steps) and steps % self.rounds_per_dilemma > 0

    def round_progress(self, round_index: int) -> float:
        """How far into its deliberation ``round_index`` is: 0 in the first round, 1 in the binding one."""
        return round_index / self.deliberation_rounds if self.deliberation_rounds else 0.0
