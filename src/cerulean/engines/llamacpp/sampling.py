"""Per-sequence sampling through llama.cpp's sampler chain (in C, never over numpy logits).

The chain follows OpenAI's semantics: penalties on the tokens generated so far, then
temperature, then nucleus (``top_p``) filtering, then a seeded draw; temperature 0 is greedy.
"""

from __future__ import annotations

from typing import Any

import llama_cpp

from cerulean.engines.base import SamplingParams

__all__ = ["Sampler"]


class Sampler:
    """One sequence's sampler chain; it remembers the tokens it picked (for the penalties)."""

    def __init__(self, params: SamplingParams, *, seed: int, n_vocab: int, window: int) -> None:
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        chain: Any = llama_cpp.llama_sampler_chain_init(chain_params)
        self._chain = chain
        add = llama_cpp.llama_sampler_chain_add
        if params.presence_penalty or params.frequency_penalty:
            add(
                chain,
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab,
                    max(window, 1),
                    1.0,
                    params.frequency_penalty,
                    params.presence_penalty,
                ),
            )
        if params.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return
        add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
        if params.top_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: Any, index: int) -> int:
        """Pick (and accept) the next token from the logits at batch ``index``."""
        return int(llama_cpp.llama_sampler_sample(self._chain, ctx, index))

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
