"""Log probabilities from a position's logits: a log-softmax over the whole vocabulary.

They describe the *model's* distribution: the raw logits, before ``logit_bias``, penalties,
temperature, ``top_p`` or a grammar change what the sampler draws from (OpenAI reports them that
way too; see docs/differences.md). llama.cpp's samplers work on a copy, so the logits are still
intact after a draw. Computed only for requests that ask for them: with a 262k-token vocabulary
one position costs about a millisecond of numpy.
"""

from __future__ import annotations

from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt

__all__ = ["LogitRow", "log_softmax_at", "read_logits"]

LogitRow = npt.NDArray[np.float32]


def read_logits(ctx: Any, index: int, n_vocab: int) -> LogitRow:
    """The logits of batch row ``index`` (a view of llama.cpp's buffer, valid until the next
    decode)."""
    pointer = llama_cpp.llama_get_logits_ith(ctx, index)
    return np.ctypeslib.as_array(pointer, shape=(n_vocab,))


def log_softmax_at(logits: LogitRow, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
    """``token``'s log probability and the ``k`` likeliest tokens, best first.

    The normaliser is ``max + log Σ exp(x - max)``, summed in float64, so log probabilities are
    exact to float32 precision and never positive.
    """
    peak = float(logits.max())
    shifted = logits - peak
    np.exp(shifted, out=shifted)
    norm = peak + float(np.log(shifted.sum(dtype=np.float64)))
    chosen = min(float(logits[token]) - norm, 0.0)
    if k <= 0:
        return chosen, []
    k = min(k, logits.shape[0])
    best = np.argpartition(logits, -k)[-k:]
    best = best[np.argsort(-logits[best], kind="stable")]
    return chosen, [(int(t), min(float(logits[t]) - norm, 0.0)) for t in best]
