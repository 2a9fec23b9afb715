"""An experiment: a validated scenario, who sits in which seat, how many episodes, which seeds.

An :class:`Experiment` holds only plain data, so it pickles cheaply to Ray workers and
joblib processes; each process builds its environment factory and policies once
(:meth:`Experiment.setup`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from valuegym.agents import decision_settings, flatten
from valuegym.agents.policy import Policy, PolicyIdentity
from valuegym.envs import make_parallel
from valuegym.record_schema import declared_types
from valuegym.runner.seats import NO_REGULATOR, Seat, build_seats, seat_configs, unique_policies
from valuegym.scenarios import Scenario

__all__ = ["NO_REGULATOR", "EpisodePlan", "EpisodeSetup", "Experiment", "Seat"]
DERIVED_SEEDS = "derived"
EpisodeSeeds = Literal["derived", "consecutive"]


def episode_seed(base_seed: int, episode_id: int) -> int:
    """The seed of one episode: depends only on the run's seed and the episode's index,
    so conditions run with matched seeds (paired comparisons)."""
    return int(np.random.SeedSequence([base_seed, episode_id]).generate_state(1)[0])


def episode_seeds(base_seed: int, episodes: int, mode: EpisodeSeeds = DERIVED_SEEDS) -> list[int]:
    """Episode ``i``'s seed: :func:`episode_seed` (``derived``) or ``base_seed + i`` (``consecutive``:
    a source's own run seeds, e.g. the original DECIDE-SIM's runs 42..51 are ``seed=42``, 10 episodes)."""
    if mode == DERIVED_SEEDS:
        return [episode_seed(base_seed, i) for i in range(episodes)]
    if mode == "consecutive":
        return [base_seed + i for i in range(episodes)]
    raise ValueError(f"episode_seeds must be derived or consecutive, got {mode!r}")


@dataclass(frozen=True)
class EpisodePlan:
    episode_id: int
    seed: int


@dataclass
class EpisodeSetup:
    """What one process needs to run episodes of an experiment."""

    experiment: Experiment
    seats: dict[str, Seat]
    #: called with each step's decision rows (live progress); set by the run in this process
    on_step: Callable[[list[dict[str, Any]]], None] | None = None
    #: the run directory (handed to policies in ``AgentContext.run_dir``); set by the run
    run_dir: str = ""
    _idle_envs: list[Any] = field(default_factory=list)
    _identities: dict[int, PolicyIdentity] = field(default_factory=dict)

    def acquire_env(self) -> Any:
        """An environment for one episode; they are reused (``reset`` starts afresh) because
        building one costs more than a scripted episode."""
        if self._idle_envs:
            return self._idle_envs.pop()
        return make_parallel(self.experiment.scenario.env, **self.experiment.scenario.params)

    def release_env(self, env: Any) -> None:
        self._idle_envs.append(env)

    def identity(self, policy: Policy) -> PolicyIdentity:
        """``policy``'s identity, computed once per process (it may hash a model file)."""
        known = self._identities.get(id(policy))
        if known is None:
            known = self._identities[id(policy)] = PolicyIdentity.of(policy)
        return known

    def focal_policy(self) -> Policy | None:
        return next((seat.policy for seat in self.seats.values() if seat.role == "focal"), None)

    def policies(self) -> list[Policy]:
        return unique_policies(self.seats)

    def column_types(self) -> dict[str, dict[str, str]]:
        """The record columns' declared types: the core ones, then what the environment and the
        policies publish (``record_columns``)."""
        env = self.acquire_env()
        try:
            published = getattr(env, "record_columns", {})
        finally:
            self.release_env(env)
        decisions = {
            name: kind for policy in self.policies() for name, kind in policy.record_columns().items()
        }
        return declared_types(published, {"decisions": decisions})


@dataclass(frozen=True)
class Experiment:
    scenario: Scenario
    agent: Mapping[str, Any]  # the focal agents' config (conf/agent/...)
    regulator: Mapping[str, Any] = field(default_factory=lambda: {"condition": NO_REGULATOR})
    episodes: int = 10
    seed: int = 0
    episode_seeds: EpisodeSeeds = DERIVED_SEEDS

    def __post_init__(self) -> None:
        episode_seeds(self.seed, 0, self.episode_seeds)  # an unknown mode fails here, not mid-run

    @property
    def condition(self) -> str:
        return str(self.regulator.get("condition", NO_REGULATOR))

    def plans(self) -> list[EpisodePlan]:
        return [
            EpisodePlan(i, seed)
            for i, seed in enumerate(episode_seeds(self.seed, self.episodes, self.episode_seeds))
        ]

    def identity_settings(self) -> dict[str, Any]:
        """Everything that determines the records, flattened to dotted keys: the scenario (its
        params and slots; not its description, source or tags), the focal agent's
        decision-relevant settings (every key but its kind's operational ones,
        ``valuegym.agents.OPERATIONAL_SETTINGS``), the regulator, the seed and how episode seeds
        are drawn. Not the episode count, executor or progress display (docs/run-promises.md)."""
        scenario = self.scenario.model_dump(mode="json", exclude={"description", "source", "tags"})
        settings = {
            **flatten(scenario, "scenario."),
            **{f"agent.{key}": value for key, value in decision_settings(self.agent).items()},
            **flatten(self.regulator, "regulator."),
            "seed": self.seed,
            "episode_seeds": self.episode_seeds,
        }
        return json.loads(json.dumps(settings, default=str))  # as the manifest stores it

    def identity(self) -> str:
        """The experiment id: a hash of :meth:`identity_settings` (the resume check)."""
        text = json.dumps(self.identity_settings(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def legacy_identity(self) -> str:
        """The experiment id manifests held before :meth:`identity_settings` (the whole agent
        config): a directory written then still resumes with exactly its configuration."""
        payload = {
            "scenario": self.scenario.model_dump(mode="json"),
            "agent": self.agent,
            "regulator": self.regulator,
            "seed": self.seed,
        }
        if self.episode_seeds != DERIVED_SEEDS:
            payload["episode_seeds"] = self.episode_seeds
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def secrets(self) -> list[str]:
        """Values of the environment variables the agent config names as secrets (to redact)."""
        names: list[str] = []

        def collect(node: Any) -> None:
            if isinstance(node, Mapping):
                for key, value in node.items():
                    if isinstance(value, str) and key.endswith("_env"):
                        names.append(value)
                    collect(value)
            elif isinstance(node, list):
                for item in node:
                    collect(item)

        collect(self.agent)
        return [os.environ[n] for n in names if os.environ.get(n)]

    @functools.cached_property
    def _setup(self) -> EpisodeSetup:
        return self._build_setup()

    def setup(self) -> EpisodeSetup:
        """This process's policies (built once per process; policies are shared across episodes)."""
        return self._setup

    def _build_setup(self) -> EpisodeSetup:
        seats = build_seats(seat_configs(self.scenario, self.agent), self.scenario.env, self.regulator)
        return EpisodeSetup(self, seats)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_setup", None)  # policies are rebuilt in each process
        return state
