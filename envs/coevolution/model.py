"""The co-evolution dynamics as a Mesa model: the people, the AIs, one round, and what is measured.

The numbers live in numpy arrays; :class:`HumanAgent` and :class:`AIAgent` are views of their
rows, so Mesa's ``DataCollector`` records the per-round series. The round's equations are in
the package docstring (``__init__.py``), the formulas of the measurements in ``metrics.py``.
"""

from __future__ import annotations

from typing import Any

import mesa
import numpy as np

from valuegym.envs.coevolution.graph import social_graph
from valuegym.envs.coevolution.metrics import (
    coevolve_score,
    cosine_matrix,
    count_clusters,
    diversity,
    diversity_collapse,
    lock_in,
    normalised_distance,
    pairwise_sq_distances,
    progress_fraction,
    reference_at,
    trajectory_position,
)
from valuegym.envs.coevolution.params import Params
from valuegym.envs.coevolution.trajectory import Trajectory

#: the population's random stream of an episode seed (the synthetic trajectory has its own)
POPULATION_STREAM = 1
# Mesa 3.3 logs every Model.step at INFO; one step per round would flood the run logs.


class HumanAgent(mesa.Agent):
    """One simulated person: a view of row ``index`` of the model's population arrays."""

    model: CoevolutionModel

    def __init__(self, model: CoevolutionModel, index: int) -> None:
        super().__init__(model)
        self.index = index

    @property
    def values(self) -> np.ndarray:
        return self.model.humans[self.index]

    @property
    def usage(self) -> np.ndarray:
        """How much this person consults each AI (sums to 1)."""
        return self.model.usage[self.index]


class AIAgent(mesa.Agent):
    """One AI system: a view of row ``index`` of the model's AI arrays."""

    model: CoevolutionModel

    def __init__(self, model: CoevolutionModel, index: int, name: str) -> None:
        super().__init__(model)
        self.index = index
        self.name = name

    @property
    def values(self) -> np.ndarray:
        return self.model.ais[self.index]

    @property
    def user_share(self) -> float:
        return float(self.model.usage[:, self.index].mean())

    @property
    def approval(self) -> float:
        return float(self.model.approval[self.index])

    @property
    def reward(self) -> float:
        return float(self.model.rewards[self.index])

    @property
    def pull(self) -> float:
        """This round's pull on the population mean along the reference step (NaN: no step)."""
        return float(self.model.pull[self.index])

    @property
    def value_list(self) -> list[float]:
        """The AI's values as a list (a per-round record column: its value trajectory)."""
        return self.values.tolist()

    @property
    def distance(self) -> float:
        """‖v − m‖/√d to the population mean."""
        return float(normalised_distance(self.values, self.model.population_mean))


MODEL_REPORTERS = (
    "round",
    "century",
    "round_in_century",
    "trajectory_source",
    "progress_distance",
    "progress_lag",
    "progress",
    "diversity",
    "clusters",
    "shadow_progress_distance",
    "shadow_diversity",
    "ai_influence",
    "population_values",
    "shadow_values",
    "reference_values",
)
#: per-AI record column -> AIAgent attribute
AI_REPORTERS = {
    **{name: name for name in ("user_share", "approval", "reward", "pull", "distance")},
    "values": "value_list",
}


class CoevolutionModel(mesa.Model):
    """The population and the AIs; the numbers live in numpy arrays, the agents are views."""

    def __init__(self, params: Params, trajectory: Trajectory, seed: int, ai_names: list[str]) -> None:
        super().__init__(rng=np.random.default_rng([seed, POPULATION_STREAM]))
        self.params = params
        self.trajectory = trajectory.values
        self.trajectory_source = trajectory.source
        self.centre = self.trajectory.mean(axis=0)  # for the centred cosines
        self.round = 0
        n, d = params.n_humans, self.trajectory.shape[1]
        adjacency = social_graph(params, self.rng)
        self.adjacency = adjacency.astype(float)
        self.social_weights = self.adjacency / self.adjacency.sum(axis=1, keepdims=True)  # W
        self.offsets = self.rng.normal(0.0, params.sigma_b, (n, d))
        self.humans = np.clip(self.anchor + self.offsets, 0.0, 1.0)
        self.shadow = self.humans.copy()
        self.ais = np.repeat(self.humans.mean(axis=0)[None, :], len(ai_names), axis=0)
        # The noise that moves people is shared with the shadow population and independent of
        # the AIs' sampling, so the same seed gives the same shadow under every policy.
        self.noise_rng, self.feedback_rng = self.rng.spawn(2)
        self.pull = np.full(len(ai_names), np.nan)
        self._observe_population()
        self.human_agents = HumanAgent.create_agents(self, n, list(range(n)))
        self.ai_agents = [AIAgent(self, m, name) for m, name in enumerate(ai_names)]
        self.mean_history = [self.population_mean]
        self.ai_history = [self.ais.copy()]
        self.datacollector = mesa.DataCollector(
            model_reporters={name: name for name in MODEL_REPORTERS},
            agenttype_reporters={AIAgent: dict(AI_REPORTERS)},
        )
        self.datacollector.collect(self)

    # ------------------------------------------------------------------ time
    @property
    def tau(self) -> float:
        """Time in centuries."""
        return self.round / self.params.rounds_per_century

    @property
    def century(self) -> int:
        return self.round // self.params.rounds_per_century

    @property
    def round_in_century(self) -> int:
        return self.round % self.params.rounds_per_century

    @property
    def anchor(self) -> np.ndarray:
        """â(τ), where history pulls the population this round."""
        return reference_at(self.trajectory, self.tau)

    # ------------------------------------------------------------------ the round
    def step(self, shifts: np.ndarray) -> None:
        """One round in the module's documented order; ``shifts`` is M × d in [−1, 1]."""
        p = self.params
        self.ais = np.clip(self.ais + p.delta * shifts, 0.0, 1.0)  # 1. actions
        usage = self._usage(self.humans)  # 2. who consults which AI
        previous_anchor = self.anchor
        self.round += 1
        anchor = self.anchor
        engaged = usage * (pairwise_sq_distances(self.humans, self.ais) <= p.eps_ai**2)  # π_im g_im
        ai_pull = engaged @ self.ais - engaged.sum(axis=1, keepdims=True) * self.humans  # Σ_m π g (v_m − h_i)
        self.pull = self._pull_on_progress(engaged, anchor - previous_anchor)
        noise = p.sigma * self.noise_rng.standard_normal(self.humans.shape)
        self.humans = self._update(self.humans, anchor, ai_pull, noise)  # 3. people
        self.shadow = self._update(self.shadow, anchor, 0.0, noise)
        self._observe_population()  # 4. what the AIs learn
        self.mean_history.append(self.population_mean)
        self.ai_history.append(self.ais.copy())
        self.datacollector.collect(self)

    def _update(
        self, humans: np.ndarray, anchor: np.ndarray, ai_pull: np.ndarray | float, noise: np.ndarray
    ) -> np.ndarray:
        p = self.params
        social = self._social_average(humans)
        mixed = (1.0 - p.lambda2) * social + p.lambda2 * (humans + ai_pull)
        return np.clip(p.theta * (anchor + self.offsets) + (1.0 - p.theta) * mixed + noise, 0.0, 1.0)

    def _social_average(self, humans: np.ndarray) -> np.ndarray:
        """Σ_j W̃_ij h_j: neighbours within ε, renormalised; own value when none is within ε."""
        if self.params.eps >= 1.0:  # normalised distances never exceed 1
            return self.social_weights @ humans
        weights = self.adjacency * (pairwise_sq_distances(humans) <= self.params.eps**2)
        totals = weights.sum(axis=1, keepdims=True)
        averaged = np.divide(weights @ humans, totals, out=np.zeros_like(humans), where=totals > 0)
        return np.where(totals > 0, averaged, humans)

    def _usage(self, humans: np.ndarray) -> np.ndarray:
        """π_im = softmax_m(−β‖h_i − v_m‖²)."""
        logits = -self.params.beta * pairwise_sq_distances(humans, self.ais)
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        return weights / weights.sum(axis=1, keepdims=True)

    def _pull_on_progress(self, engaged: np.ndarray, reference_step: np.ndarray) -> np.ndarray:
        """Each AI's pull on the population mean along the reference step, in units of that step."""
        step_sq = float(reference_step @ reference_step)
        if step_sq == 0.0:
            return np.full(self.ais.shape[0], np.nan)
        p = self.params
        # AI m moves the mean by (1−θ)·λ2·mean_i π_im g_im (v_m − h_i)
        moved = engaged.sum(axis=0)[:, None] * self.ais - engaged.T @ self.humans
        moved *= (1.0 - p.theta) * p.lambda2 / self.humans.shape[0]
        return moved @ reference_step / step_sq

    def _observe_population(self) -> None:
        """Usage, feedback, approval and rewards on the current state."""
        p = self.params
        self.usage = self._usage(self.humans)
        sq = pairwise_sq_distances(self.humans, self.ais)
        self.approval = -(self.usage * sq).sum(axis=0) / self.usage.sum(axis=0)
        self.rewards = (1.0 - p.kappa) * self.approval + p.kappa * self.progress
        feedback = np.empty_like(self.ais)
        for m in range(self.ais.shape[0]):
            weights = self.usage[:, m] / self.usage[:, m].sum()
            users = self.feedback_rng.choice(self.humans.shape[0], size=p.feedback_k, p=weights)
            feedback[m] = self.humans[users].mean(axis=0) + p.sigma_obs * self.feedback_rng.standard_normal(
                self.ais.shape[1]
            )
        self.feedback = np.clip(feedback, 0.0, 1.0)

    # ------------------------------------------------------------------ per-round measurements
    @property
    def population_mean(self) -> np.ndarray:
        return self.humans.mean(axis=0)

    @property
    def progress_distance(self) -> float:
        """D = ‖m − â‖/√d."""
        return float(normalised_distance(self.population_mean, self.anchor))

    @property
    def progress_lag(self) -> float:
        """Centuries between now and the closest point of the reference to the mean."""
        return self.tau - trajectory_position(self.population_mean, self.trajectory)

    @property
    def progress(self) -> float:
        """(1/T)·Σ_i max_{j≥i} cos(m̃, ã_j), centred on mean(A): the progress reward term."""
        return coevolve_score(self.population_mean[None, :], self.trajectory, self.centre)

    @property
    def diversity(self) -> float:
        return diversity(self.humans)

    @property
    def clusters(self) -> int:
        return count_clusters(self.humans, self.params.eps)

    @property
    def population_values(self) -> list[float]:
        """The population mean m per dimension (with the next two: the value trajectories replays draw)."""
        return self.population_mean.tolist()

    @property
    def shadow_values(self) -> list[float]:
        """The shadow population's mean m^∅ per dimension."""
        return self.shadow.mean(axis=0).tolist()

    @property
    def reference_values(self) -> list[float]:
        """The reference â(τ) per dimension."""
        return self.anchor.tolist()

    @property
    def shadow_progress_distance(self) -> float:
        return float(normalised_distance(self.shadow.mean(axis=0), self.anchor))

    @property
    def shadow_diversity(self) -> float:
        return diversity(self.shadow)

    @property
    def ai_influence(self) -> float:
        """‖m − m^∅‖/√d."""
        return float(normalised_distance(self.population_mean, self.shadow.mean(axis=0)))

    # ------------------------------------------------------------------ episode measurements
    def century_snapshots(self, history: list[np.ndarray]) -> np.ndarray:
        """The entries of a per-round history at century ends (round 0, R, 2R, …)."""
        return np.asarray(history[:: self.params.rounds_per_century])

    def episode_metrics(self) -> dict[str, float]:
        """The design's per-episode metrics (§5), on the state reached so far."""
        snapshots = self.century_snapshots(self.mean_history)
        start, end, shadow_end = self.mean_history[0], self.population_mean, self.shadow.mean(axis=0)
        reference_start, reference_end = reference_at(self.trajectory, 0.0), self.anchor
        progress_ai = progress_fraction(start, end, reference_start, reference_end)
        progress_shadow = progress_fraction(start, shadow_end, reference_start, reference_end)
        return {
            "coevolve_score": coevolve_score(snapshots, self.trajectory),
            "coevolve_score_centred": coevolve_score(snapshots, self.trajectory, self.centre),
            "progress_distance": self.progress_distance,
            "progress_lag": self.progress_lag,
            "diversity": self.diversity,
            "diversity_collapse": diversity_collapse(self.diversity, self.shadow_diversity),
            "lock_in": lock_in(progress_ai, progress_shadow),
            "ai_influence": self.ai_influence,
        }

    def ai_metrics(self, index: int) -> dict[str, float]:
        """Follow and predict cosines (centred) at century ends, and the AI's usage and approval."""
        values = self.century_snapshots([ais[index] for ais in self.ai_history]) - self.centre
        reference = self.trajectory - self.centre
        cosines = cosine_matrix(values, reference)  # snapshot k × century j
        ahead = [cosines[k, k + 1] for k in range(min(len(values), len(reference) - 1))]
        series = self.datacollector.get_agenttype_vars_dataframe(AIAgent).xs(
            self.ai_agents[index].unique_id, level="AgentID"
        )
        acted = series.iloc[1:]  # the rounds played (their means are NaN before the first round)
        return {
            "final_user_share": self.ai_agents[index].user_share,
            "mean_user_share": float(acted["user_share"].mean()),
            "mean_approval": float(acted["approval"].mean()),
            "mean_reward": float(acted["reward"].mean()),
            "follow_cos": float(np.mean([cosines[k, k] for k in range(len(values))])),
            "predict_cos": float(np.mean(ahead)),
        }

    def round_rows(self) -> list[dict[str, Any]]:
        """The DataCollector's per-round series, one row per round, AI columns as ``<metric>_<agent>``."""
        frame = self.datacollector.get_model_vars_dataframe()
        per_ai = self.datacollector.get_agenttype_vars_dataframe(AIAgent).reset_index()
        names = {agent.unique_id: agent.name for agent in self.ai_agents}
        per_ai["agent"] = per_ai["AgentID"].map(names)
        wide = per_ai.pivot(index="Step", columns="agent", values=list(AI_REPORTERS))
        wide.columns = [f"{metric}_{agent}" for metric, agent in wide.columns]
        return frame.join(wide, on="round").to_dict(orient="records")

    def release(self) -> None:
        """Let this model be garbage-collected once dropped.

        Mesa 3.3 keys its class-level agent-id counters (``mesa.Agent._ids``) by model and so
        keeps every model alive; an env creating one per episode would grow without bound.
        """
        mesa.Agent._ids.pop(self, None)
