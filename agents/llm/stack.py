"""The backend stack an LLM agent's configuration describes (:func:`build_backend`)."""

from __future__ import annotations

from valuegym.agents.llm.backends.base import LLMBackend
from valuegym.agents.llm.backends.budget import CallBudgetBackend
from valuegym.agents.llm.backends.cache import CachedBackend, ResponseCache
from valuegym.agents.llm.backends.concurrency import (
    DEFAULT_LEASE_S,
    ConcurrencyLimitedBackend,
    SharedConcurrencyLimitedBackend,
)
from valuegym.agents.llm.backends.llama_cpp import LlamaCppBackend
from valuegym.agents.llm.backends.openai_compatible import OpenAICompatibleBackend
from valuegym.agents.llm.backends.rate_limit import RateLimitedBackend
from valuegym.agents.llm.backends.retry import RetryingBackend
from valuegym.agents.llm.backends.spend_cap import SpendCapBackend
from valuegym.agents.llm.config import LlamaCppSettings, LLMConfig, OpenAISettings


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
