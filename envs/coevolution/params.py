"""The co-evolution scenario's parameters and its named value-dimension layouts (pure data)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: named value-dimension layouts selectable with ``dims=<name>``
DIM_LAYOUTS: dict[str, tuple[str, ...]] = {
    # Moral Foundations Theory: ProgressGym's questionnaire dimensions 10–14.
    "foundations": ("care", "fairness", "loyalty", "authority", "sanctity"),
    # ProgressGym's 19-dimensional questionnaire (Qiu et al. 2024, its moral-value survey).
    "pg19": (
        # 0–9: Gert's ten moral rules (MoralChoice)
        "do_not_kill",
        "do_not_cause_pain",
        "do_not_disable",
        "do_not_deprive_of_freedom",
        "do_not_deprive_of_pleasure",
        "do_not_deceive",
        "do_not_cheat",
        "keep_promises",
        "obey_the_law",
        "do_your_duty",
        # 10–14: moral foundations
        "care",
        "fairness",
        "loyalty",
        "authority",
        "sanctity",
        # 15–18: worldviews
        "traditional",
        "modern",
        "postmodern",
        "integrated",
    ),
}
SYNTHETIC = "synthetic"
DEFAULT_CENTURIES = 9  # ProgressGym's C013–C021
_DIM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Params(BaseModel):
    """Every parameter of a co-evolution scenario (the keyword arguments of :func:`parallel_env`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    n_ais: int = Field(2, ge=1, le=100, description="M, the AI agents ai_0 … ai_{M-1}")
    n_humans: int = Field(200, ge=2, le=100_000, description="N, the simulated people")
    dims: Literal["foundations", "pg19"] | list[str] = Field(
        "foundations", description="a layout of DIM_LAYOUTS or a list of dimension names"
    )
    graph: Literal["watts_strogatz", "complete"] = "watts_strogatz"
    graph_k: int = Field(
        6, ge=2, le=1_000, description="Watts–Strogatz: neighbours per person on the ring (even)"
    )
    graph_p: float = Field(0.1, ge=0, le=1, description="Watts–Strogatz: rewiring probability")
    trajectory: str = Field(
        SYNTHETIC,
        description="'synthetic' or the path of a JSON file (load_trajectory); "
        "in a scenario file, relative to the scenario's folder",
        # valuegym.scenarios resolves it as a path unless it is the word synthetic
        json_schema_extra={"x-path": [SYNTHETIC]},
    )
    trajectory_seed: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="synthetic only: fixed seed; None draws each episode's from the episode seed",
    )
    drift: float = Field(0.3, gt=0, le=1, description="synthetic only: ‖a_{T-1} − a_0‖/√d")
    centuries: int | None = Field(
        None, ge=2, le=1_000, description="T; None: 9 (synthetic) or the file's length"
    )
    rounds_per_century: int = Field(10, ge=1, le=10_000, description="R")
    sigma_b: float = Field(0.1, ge=0, le=100, description="sd of the people's fixed offsets b_i")
    theta: float = Field(0.1, ge=0, le=1, description="pull of history (stubbornness toward â + b_i)")
    lambda2: float = Field(0.2, ge=0, le=1, description="people's trust in the AIs")
    eps: float = Field(
        0.3, gt=0, le=1_000_000, description="bounded confidence between people (≥ 1: unbounded)"
    )
    eps_ai: float = Field(
        0.3, gt=0, le=1_000_000, description="bounded confidence toward an AI (≥ 1: unbounded)"
    )
    sigma: float = Field(0.01, ge=0, le=100, description="sd of the people's per-round noise")
    beta: float = Field(10.0, ge=0, le=500, description="how sharply people pick the AI closest to them")
    delta: float = Field(0.05, gt=0, le=1, description="largest change of an AI value per round")
    feedback_k: int = Field(16, ge=1, le=100_000, description="users sampled for an AI's feedback")
    sigma_obs: float = Field(0.02, ge=0, le=100, description="sd of the feedback's measurement noise")
    kappa: float = Field(0.0, ge=0, le=1, description="reward weight of progress (0: approval only)")
    event_threshold: float = Field(
        0.5, gt=0, le=1_000_000, description="|pull| / reference step that makes a harm/prosocial event"
    )
    expose_oracle: bool = Field(False, description="put the reference one century ahead in infos['oracle']")
    max_cycles: int | None = Field(
        None, ge=1, le=1_000_000, description="caps the number of rounds (PettingZoo convention)"
    )
    render_mode: Literal["ansi", "human"] | None = Field(
        None, description="ansi: render() returns text; human: prints it"
    )

    @field_validator("dims")
    @classmethod
    def _valid_dim_names(cls, dims: str | list[str]) -> str | list[str]:
        if isinstance(dims, str):
            return dims
        if len(dims) < 2:
            raise ValueError(f"need at least 2 value dimensions, got {dims}")
        if len(set(dims)) != len(dims):
            raise ValueError(f"dimension names must be unique, got {dims}")
        bad = [name for name in dims if not _DIM_NAME.match(name)]
        if bad:
            raise ValueError(f"dimension names must be lower_snake_case identifiers, got {bad}")
        return dims

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.graph == "watts_strogatz" and (self.graph_k % 2 or self.graph_k >= self.n_humans):
            raise ValueError(f"graph_k must be even and below n_humans={self.n_humans}, got {self.graph_k}")
        synthetic_only = sorted({"trajectory_seed", "drift"} & self.model_fields_set)
        if self.trajectory != SYNTHETIC and synthetic_only:
            raise ValueError(f"{', '.join(synthetic_only)} apply to the synthetic trajectory only")
        return self

    def dim_names(self) -> tuple[str, ...]:
        return DIM_LAYOUTS[self.dims] if isinstance(self.dims, str) else tuple(self.dims)
