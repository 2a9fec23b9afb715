"""``answer_format: choice``: the actions a turn allows, scored by the model, and one picked.

Every action the environment's mask allows is rendered as text and scored by its
log-likelihood after the prompt; the best one is played (mean log-probability per token;
with ``temperature > 0`` one is sampled from the softmax of those scores over the
temperature, with the call's seed). Every option's score is recorded in the
``choice_scores`` column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from valuegym.agents.llm.backends.base import Completion, OptionScores
from valuegym.agents.policy import Turn, action_mask


def allowed_actions(turn: Turn, env_name: str) -> list[dict[str, Any]]:
    """The actions of ``turn``'s catalog that its mask allows, in catalog order."""
    if turn.action_catalog is None:
        raise ValueError(
            f"answer_format choice scores the actions of a discrete catalog; {env_name!r} "
            "has none (its actions are continuous or free-form): use answer_format json"
        )
    mask = action_mask(turn)
    actions = [
        dict(action)
        for index, action in enumerate(turn.action_catalog())
        if action is not None and (mask is None or mask[index])
    ]
    if not actions:
        raise ValueError(f"answer_format choice: the mask of {turn.agent} allows no action")
    return actions


def per_token_logprobs(scores: OptionScores) -> np.ndarray:
    """Each option's mean log-probability per token (what is compared)."""
    return np.array(scores.logprobs) / np.maximum(np.array(scores.tokens), 1)


def pick(per_token: np.ndarray, temperature: float, seed: int) -> int:
    """The best option (ties: the first), or at ``temperature > 0`` one sampled with ``seed``."""
    if temperature == 0:
        return int(np.argmax(per_token))
    weights = np.exp((per_token - per_token.max()) / temperature)
    rng = np.random.default_rng(seed)
    return int(rng.choice(len(per_token), p=weights / weights.sum()))


def score_table(texts: Sequence[str], scores: OptionScores) -> str:
    """The ``choice_scores`` column: every option with its summed logprob and token count."""
    table = [
        {"option": text, "logprob": logprob, "tokens": tokens}
        for text, logprob, tokens in zip(texts, scores.logprobs, scores.tokens, strict=True)
    ]
    return json.dumps(table, ensure_ascii=False)


def scores_as_completion(scores: OptionScores, chosen: str) -> Completion:
    """A scoring's accounting in the shape of a reply: the chosen option is the 'reply'."""
    return Completion(
        text=chosen,
        prompt_tokens=scores.prompt_tokens,
        completion_tokens=sum(scores.tokens),
        latency_s=scores.latency_s,
        finish_reason="scores",
        cache_hit=scores.cache_hit,
        calls=scores.calls,
    )
