"""Per-sequence sampling through llama.cpp's sampler chain (in C, never over numpy logits).

The chain follows OpenAI's semantics: penalties on the tokens generated so far, then
temperature, then nucleus (``top_p``) filtering, then a seeded draw; temperature 0 is greedy.
A grammar, when given, comes first and masks every token that would break it; ``logit_bias``
is added to the logits next (OpenAI's semantics: -100 bans a token, +100 all but forces it).
"""

from __future__ import annotations

from typing import Any

import llama_cpp

from cerulean.engines.base import SamplingParams

__all__ = ["Sampler", "grammar_error"]


def grammar_error(vocab: Any, grammar: str) -> str | None:
    """Why llama.cpp cannot compile ``grammar`` (None when it can); safe from any thread."""
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        return "the grammar does not parse as GBNF with a 'root' rule"
    llama_cpp.llama_sampler_free(sampler)
    return None


class Sampler:
    """One sequence's sampler chain; it remembers the tokens it picked (for the penalties)."""

    def __init__(
        self, params: SamplingParams, *, seed: int, vocab: Any, n_vocab: int, window: int
    ) -> None:
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        chain: Any = llama_cpp.llama_sampler_chain_init(chain_params)
        self._chain = chain
        add = llama_cpp.llama_sampler_chain_add
        if params.grammar:
            grammar = llama_cpp.llama_sampler_init_grammar(
                vocab, params.grammar.encode("utf-8"), b"root"
            )
            if not grammar:  # checked before admission; never reached from user input
                raise ValueError("invalid grammar")
            add(chain, grammar)
        if params.logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(params.logit_bias))()
            for slot, (token, bias) in zip(biases, params.logit_bias, strict=True):
                slot.token, slot.bias = token, bias
            add(chain, llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(biases), biases))
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
