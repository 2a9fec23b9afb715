"""The LLM policy: environment situation -> prompt template -> model -> environment action.

Per step, each agent's ``info["situation"]`` (what the environment publishes, see
``envs/spec.py``) is rendered through the environment's Jinja2 template
(``templates/<env_name>.j2``, or ``agent.template: PATH``; see ``prompts.py``) into chat
messages; all of a step's turns go to the backend together; each reply becomes a
:class:`Decision`. The backend stack is built from the configuration (``config.py``,
``stack.py``; the backends are in ``backends/``).

Replies. With ``answer_format: json`` the model is asked for
``{"reasoning": str, "action": <the env's action schema>}`` (reasoning first, so the
model thinks before it acts) and backends that can constrain decoding are given that
schema. An environment may publish another layout in its action schema (``"x-reply"``,
``envs/spec.py``), e.g. DECIDE-SIM's original ``{"reasoning", "high_level_goal",
"action_details"}``. The ``action`` part is validated against the environment's action schema
(``replies.py``); a reply that is not a valid action is recorded ``valid=False`` with the
reason and the raw reply, and the configured fallback action is played (never silently; by
default none: the environment applies its own no-op and records the turn invalid). With
``answer_format: text`` (environments whose action schema sets ``"x-text-answer": true``)
the reply text itself is the action, ``{"text": reply}``. With ``answer_format: choice``
(environments with a discrete action catalog) the model writes nothing: every action the
environment's mask allows is rendered as text (the template's ``choice_text(action)`` macro,
else the action's JSON), scored by its log-likelihood after the prompt, and the best one is
played (mean log-probability per token; with ``temperature > 0`` one is sampled from the
softmax of those scores over the temperature, with the call's seed); every option's score is
recorded in the ``choice_scores`` column (``choice.py``). A backend failure (after retries) is
not an invalid reply: it propagates, and the runner marks the episode failed.

Reproducibility. Personas are drawn from the episode seed and the agent's name only, so
every model sees the same persona assignment (paired comparisons). Each model call gets
a seed derived from ``agent.seed``, the episode seed, the agent and the turn: episodes
sample differently, reruns repeat exactly, and the response cache then serves them.

Processes. The policy object holds only configuration and the template text; backends
and the cache are created on first use in each process, so a policy can be pickled to
Ray workers and serves many episodes of one event loop at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from valuegym.agents import OPERATIONAL_SETTINGS
from valuegym.agents.llm import choice
from valuegym.agents.llm.backends.base import (
    BackendWrapper,
    ChatMessage,
    Completion,
    CompletionRequest,
    LLMBackend,
    ScoringRequest,
)
from valuegym.agents.llm.backends.gguf import bundled_smollm2_path, file_sha256
from valuegym.agents.llm.backends.spend_cap import SpendCapBackend
from valuegym.agents.llm.config import LlamaCppSettings, LLMConfig, parse_config
from valuegym.agents.llm.prompts import PromptTemplate, messages_as_text
from valuegym.agents.llm.replies import (
    TEXT_ANSWER_KEY,
    ParsedReply,
    cached_reply_schema,
    parse_json_reply,
    schema_validator,
    strip_reasoning_markup,
)
from valuegym.agents.llm.stack import build_backend
from valuegym.agents.policy import AgentContext, Decision, LLMCall, Policy, Turn

#: the operational settings (valuegym.agents.OPERATIONAL_SETTINGS: where and how fast the model
#: runs, how calls are retried, stored, limited and priced) are left out of the policy identity;
#: so is the model file's path, whose content hash stands in for it. Every other setting, present
#: or future, is part of it.
_OPERATIONAL = OPERATIONAL_SETTINGS["llm"]

_NOT_IDENTITY: frozenset[str] = frozenset(
    {"model_path"} | {key.removeprefix("backend.") for key in _OPERATIONAL if key.startswith("backend.")}
)

#: agent settings left out of the identity's ``params``: the backend and template are described
#: apart; the operational ones govern how calls are made, not what is replied
_NOT_IDENTITY_CONFIG: frozenset[str] = frozenset(
    {"kind", "name", "backend", "template"} | {key for key in _OPERATIONAL if "." not in key}
)

# Independent random streams derived from the episode seed (SeedSequence spawn keys).
_PERSONA_STREAM = 1

_CALL_SEED_STREAM = 2


def make_from_config(cfg: Mapping[str, Any], env_name: str) -> LLMPolicy:
    """Build the policy an ``agent=llm/...`` config describes (``valuegym.agents.make_policy``)."""
    return LLMPolicy(parse_config(cfg), env_name)


@dataclass(frozen=True)
class LLMAgentState:
    """One agent's state in one episode (the policy object itself holds none)."""

    context: AgentContext
    persona: str | None
    memory: tuple[str, ...] = ()  # the agent's own recent turns (empty unless memory is on)
    turn: int = 0  # decisions made so far
    # looked up once per episode, not per call (serialising a schema to find them costs more than a call)
    validator: Any = None
    reply_schema: Mapping[str, Any] | None = None


def _agent_key(agent: str) -> int:
    return zlib.crc32(agent.encode("utf-8"))  # stable across processes, unlike hash()


class LLMPolicy(Policy[LLMAgentState]):
    """Decides by asking a language model; see the module docstring."""

    def __init__(self, config: LLMConfig, env_name: str, *, base_backend: LLMBackend | None = None) -> None:
        """``base_backend`` replaces the configured model (tests); such a policy cannot be pickled."""
        self.config = config
        self.env_name = env_name
        self.name = f"llm/{config.name}"
        self.template = PromptTemplate.for_env(env_name, config.template)
        # None hands the environment no action: every valuegym env then applies its documented
        # no-op (DECIDE-SIM: WAIT; co-evolution: hold) and records the turn invalid, so an
        # unusable reply never counts as a refusal or a choice.
        self.fallback: dict[str, Any] | None = dict(config.fallback) if config.fallback is not None else None
        self._base_backend = base_backend
        self._backend: LLMBackend | None = None

    def __getstate__(self) -> dict[str, Any]:
        if self._base_backend is not None:
            raise TypeError("an LLMPolicy built around an injected backend cannot be sent to another process")
        state = dict(self.__dict__)
        state["_backend"] = None  # each process builds its own on first use
        return state

    @property
    def calls_in_flight(self) -> int:
        return self.config.concurrency

    @property
    def backend(self) -> LLMBackend:
        if self._backend is None:
            self._backend = build_backend(self.config, self._base_backend)
        return self._backend

    def identity(self) -> dict[str, Any]:
        """The model (backend type and settings; for a GGUF file, its content hash, which also
        fixes the chat template it carries), the prompt template's hash and every setting that
        shapes replies. The server's address, key and timeouts are left out: the same model
        served elsewhere is the same model."""
        config = self.config
        settings = config.backend
        model = {key: value for key, value in settings.model_dump().items() if key not in _NOT_IDENTITY}
        if isinstance(settings, LlamaCppSettings):
            path = Path(settings.model_path).expanduser() if settings.model_path else bundled_smollm2_path()
            model |= {"name": path.stem, "file": path.name, "sha256": file_sha256(path)}
        else:
            model["name"] = settings.model
        return {
            "kind": "llm",  # the config's name is left out: it names a file, not what ran
            "model": model,
            "template": {
                "origin": config.template or "default",
                "sha256": hashlib.sha256(self.template.source.encode("utf-8")).hexdigest(),
            },
            "params": config.model_dump(exclude=_NOT_IDENTITY_CONFIG),
        }

    def label(self) -> str:
        return f"{self.name} [{self.identity()['model']['name']}]"

    async def preflight(self) -> None:
        """Fail fast (``BackendUnavailableError``) if the model cannot be reached or loaded."""
        await self.backend.check()

    def initial_state(self, context: AgentContext) -> LLMAgentState:
        schema = context.action_schema
        validator = schema_validator(schema)
        if self.config.answer_format == "text" and not schema.get(TEXT_ANSWER_KEY):
            raise ValueError(
                f"answer_format text needs an environment that takes free-text answers "
                f"({TEXT_ANSWER_KEY!r} in its action schema); {context.env_name!r} does not"
            )
        fallback_error = self.fallback is not None and jsonschema.exceptions.best_match(
            validator.iter_errors(self.fallback)
        )
        if fallback_error:
            raise ValueError(
                f"the fallback action {self.fallback} is not a valid {context.env_name} action: "
                f"{fallback_error.message}; set agent.fallback"
            )
        reply = None
        if self.config.answer_format == "json":
            reply = cached_reply_schema(
                json.dumps(schema), self.config.reasoning_max_chars, self.config.action_text_max_chars
            )
        if self.config.max_cost_usd is not None:
            self._name_the_run(context.run_dir)
        return LLMAgentState(
            context=context,
            persona=self._sample_persona(context),
            validator=validator,
            reply_schema=reply,
        )

    def _name_the_run(self, run_dir: str) -> None:
        """The spend cap is the run's: tell it which run this process serves (under Ray, the
        run's workers then share one ledger)."""
        backend = self.backend
        while isinstance(backend, BackendWrapper):
            if isinstance(backend, SpendCapBackend):
                backend.run_key = run_dir
            backend = backend.inner

    def _sample_persona(self, context: AgentContext) -> str | None:
        if not self.config.personas:
            return None
        seeds = np.random.SeedSequence(
            context.episode_seed, spawn_key=(_PERSONA_STREAM, _agent_key(context.agent))
        )
        return self.config.personas[int(np.random.default_rng(seeds).integers(len(self.config.personas)))]

    def _call_seed(self, state: LLMAgentState) -> int:
        seeds = np.random.SeedSequence(
            [self.config.seed, state.context.episode_seed],
            spawn_key=(_CALL_SEED_STREAM, _agent_key(state.context.agent), state.turn),
        )
        return int(seeds.generate_state(1, dtype=np.uint32)[0] >> 1)  # 31 bits: every server accepts it

    async def step_batch(self, turns: Sequence[Turn]) -> list[tuple[Decision, Any]]:
        results = await asyncio.gather(*(self._decide(turn) for turn in turns), return_exceptions=True)
        # Every call has finished (and its reply is cached) before the first failure propagates.
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]

    async def _decide(self, turn: Turn) -> tuple[Decision, LLMAgentState]:
        state: LLMAgentState = turn.state
        context = state.context
        if "situation" not in turn.info:
            raise KeyError(f"{context.env_name} published no info['situation'] for {turn.agent}")
        memory = self._memory_with_outcome(state.memory, turn.info.get("outcome"))
        variables = {
            "agent": turn.agent,
            "situation": turn.info["situation"],
            "persona": state.persona,
            "memory": list(memory),
            "affect": turn.info.get("affect"),
            "action_schema": context.action_schema,
            "answer_format": self.config.answer_format,
            "options": [],
        }
        if self.config.answer_format == "choice":
            decision = await self._choose(turn, state, variables)
        else:
            decision = await self._reply(state, variables)
        if self.config.memory.enabled:
            played = json.dumps(decision.action, ensure_ascii=False)
            entry = f"Turn {state.turn + 1}: I did {played}" + (
                "" if decision.valid else " (my reply was not a valid action)"
            )
            memory = (*memory, entry)[-self.config.memory.turns :]
        return decision, replace(state, memory=memory, turn=state.turn + 1)

    async def _reply(self, state: LLMAgentState, variables: Mapping[str, Any]) -> Decision:
        """``json`` and ``text``: the model writes its answer, which is parsed and validated."""
        context = state.context
        messages = self.template.render(**variables)
        text_answer = self.config.answer_format == "text"
        request = CompletionRequest(
            messages=messages,
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            seed=self._call_seed(state),
            json_schema=None if text_answer else state.reply_schema,
        )
        completion = await self.backend.complete(request)

        if text_answer:
            answer = strip_reasoning_markup(completion.text)
            parsed = ParsedReply({"text": answer}, "") if answer else ParsedReply(None, "empty reply")
        else:
            parsed = parse_json_reply(
                completion.text, completion.finish_reason, context.action_schema, state.validator
            )
        valid = parsed.action is not None
        action = parsed.action if valid else (dict(self.fallback) if self.fallback is not None else None)
        return Decision(
            action=action,
            valid=valid,
            reason=parsed.reason,
            llm=self._llm_call(messages, completion),
            extra={"persona": state.persona},
        )

    async def _choose(self, turn: Turn, state: LLMAgentState, variables: dict[str, Any]) -> Decision:
        """``choice``: score every action the mask allows and play the best (or a sampled) one."""
        actions = choice.allowed_actions(turn, state.context.env_name)
        texts = self.template.option_texts(actions, **variables)
        variables["options"] = texts
        messages = self.template.render(**variables)
        scores = await self.backend.score(ScoringRequest(messages, tuple(texts)))
        chosen = choice.pick(
            choice.per_token_logprobs(scores), self.config.temperature, self._call_seed(state)
        )
        return Decision(
            action=actions[chosen],
            llm=self._llm_call(messages, choice.scores_as_completion(scores, texts[chosen])),
            extra={"persona": state.persona, "choice_scores": choice.score_table(texts, scores)},
        )

    @staticmethod
    def _memory_with_outcome(memory: tuple[str, ...], outcome: Mapping[str, Any] | None) -> tuple[str, ...]:
        """Complete the last memory entry with what the environment says that action did."""
        if not memory or not outcome or "status" not in outcome:
            return memory
        reason = outcome.get("reason")
        result = f" -> {outcome['status']}" + (f": {reason}" if reason else "")
        return (*memory[:-1], memory[-1] + result)

    def _llm_call(self, messages: Sequence[ChatMessage], completion: Completion) -> LLMCall:
        prices = self.config.prices
        cost = None
        if prices is not None:
            cost = (
                0.0
                if completion.cache_hit
                else (
                    completion.prompt_tokens * prices.prompt_per_1m
                    + completion.completion_tokens * prices.completion_per_1m
                )
                / 1e6
            )
        return LLMCall(
            model=self.backend.model_id,
            prompt=messages_as_text(messages),
            raw_reply=completion.text,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            latency_s=completion.latency_s,
            cache_hit=completion.cache_hit,
            calls=completion.calls,
            cost_usd=cost,
        )

    async def release_loop(self) -> None:
        if self._backend is not None:
            await self._backend.release_loop()

    async def close(self) -> None:
        """Release the model or connections (the runner awaits it after the last episode; each
        event loop's connections were already released by :meth:`release_loop` before it ended).
        A later step builds a new backend."""
        backend, self._backend = self._backend, None
        if backend is not None:
            await backend.close()
