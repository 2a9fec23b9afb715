"""Constrained decoding for the in-process backend: a JSON schema as a llama.cpp grammar,
applied to the likeliest tokens first (:class:`GrammarMask`)."""

from __future__ import annotations

import ctypes
import functools
from typing import TYPE_CHECKING

import numpy as np

from valuegym.agents.llm.backends.base import BackendError

if TYPE_CHECKING:
    import llama_cpp


#: llama.cpp's default sampling chain settings, passed explicitly because GrammarMask relies on them
TOP_K = 40

TOP_P = 0.95

MIN_P = 0.05


@functools.lru_cache(maxsize=64)
def gbnf_for_schema(schema_json: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(schema_json)


class GrammarMask:
    """A llama.cpp logits processor that forbids every token the grammar does not allow next.

    llama-cpp-python applies a grammar to all ~49k vocabulary entries at every token, which
    makes constrained decoding 5-20x slower than free decoding (llama.cpp issue #4218). This
    checks the likeliest tokens first: the ``_WINDOW`` highest logits go through the grammar
    in one call, and the whole vocabulary only when that window cannot decide. The result is
    the same distribution as grammar-first sampling, because the chain that follows keeps at
    most ``TOP_K`` tokens and drops any whose logit is below the best allowed logit plus
    ln(``MIN_P``): when the window holds ``TOP_K`` allowed tokens, or ends below that cut,
    no token outside it could have been sampled.
    """

    _WINDOW = 64

    def __init__(self, llama: llama_cpp.Llama, gbnf: str) -> None:
        import llama_cpp

        self._api = llama_cpp
        self._sampler = llama_cpp.llama_sampler_init_grammar(
            llama._model.vocab, gbnf.encode("utf-8"), b"root"
        )
        if not self._sampler:
            raise BackendError("llama.cpp rejected the grammar built from the reply schema")
        self._tokens_seen: int | None = None
        self._end_tokens = [llama.token_eos()]
        self.error: BaseException | None = None  # raised by the caller: ctypes callbacks swallow exceptions

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.error is None:
            try:
                return self._mask(input_ids, scores)
            except BaseException as error:
                self.error = error
        # After a failure only end-of-generation may follow (the grammar is no longer consulted:
        # llama.cpp aborts the process when a grammar is fed a token it does not allow).
        masked = np.full_like(scores, -np.inf)
        masked[self._end_tokens] = 0.0
        return masked

    def _mask(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self._tokens_seen is None:  # first call: input_ids is the prompt
            self._tokens_seen = len(input_ids)
        for token in input_ids[self._tokens_seen :]:  # the token sampled since the last call
            self._api.llama_sampler_accept(self._sampler, int(token))
        self._tokens_seen = len(input_ids)

        window = np.argpartition(scores, -self._WINDOW)[-self._WINDOW :]
        window = window[np.argsort(-scores[window], kind="stable")].astype(np.int32)
        allowed = self._allowed(window)
        undecided = len(allowed) == 0 or (
            len(allowed) < TOP_K and scores[window[-1]] >= scores[allowed[0]] + np.log(MIN_P)
        )
        if undecided:
            allowed = self._allowed(np.arange(len(scores), dtype=np.int32))
        if len(allowed) == 0:
            raise BackendError("the reply grammar allows no token: the schema cannot be completed")
        masked = np.full_like(scores, -np.inf)
        masked[allowed] = scores[allowed]
        return masked

    def _allowed(self, tokens: np.ndarray) -> np.ndarray:
        """The given tokens (in order) that the grammar accepts next."""
        api = self._api
        data = (api.llama_token_data * len(tokens))()
        view = np.frombuffer(
            data, dtype=np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        )
        view["id"] = tokens
        view["logit"] = 0.0
        candidates = api.llama_token_data_array(data=data, size=len(tokens), selected=-1, sorted=False)
        api.llama_sampler_apply(self._sampler, ctypes.byref(candidates))
        return tokens[np.isfinite(view["logit"])]

    def free(self) -> None:
        self._api.llama_sampler_free(self._sampler)
