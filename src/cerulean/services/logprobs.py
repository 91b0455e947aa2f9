"""Log probabilities on the wire: the chat shape and the legacy completions shape.

The engine gives each shown token as a :class:`~cerulean.engines.base.TokenLogprob`; these
functions only reshape them. JSON has no infinities, so a log probability too small for a float
is sent as ``-9999.0``, the floor OpenAI's API uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cerulean.engines.base import TokenLogprob
from cerulean.errors import InvalidRequest

__all__ = [
    "FLOOR",
    "LegacyLogprobs",
    "chat_logprobs",
    "chat_logprobs_param",
    "mean_logprob",
]

FLOOR = -9999.0


def _finite(value: float) -> float:
    return value if value > FLOOR else FLOOR


def chat_logprobs_param(logprobs: bool | None, top_logprobs: int | None) -> int | None:
    """The engine's ``logprobs`` for a chat request: None, or how many alternatives (0–20)."""
    if not logprobs:
        if top_logprobs is not None:
            raise InvalidRequest(
                "Invalid value for 'top_logprobs': 'logprobs' must be set to true when "
                "'top_logprobs' is given.",
                param="top_logprobs",
            )
        return None
    return top_logprobs or 0


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """``choice.logprobs`` of a chat completion (or of one stream chunk)."""
    return {"content": [_chat_token(entry) for entry in entries], "refusal": None}


def _chat_token(entry: TokenLogprob) -> dict[str, Any]:
    return {
        "token": entry.token,
        "logprob": _finite(entry.logprob if entry.logprob is not None else FLOOR),
        "bytes": list(entry.bytes),
        "top_logprobs": [
            {"token": top.token, "logprob": _finite(top.logprob), "bytes": list(top.bytes)}
            for top in entry.top
        ],
    }


def mean_logprob(entries: Sequence[TokenLogprob]) -> float:
    """The average log probability per token (``best_of``'s ranking); 0.0 for no tokens."""
    scores = [e.logprob for e in entries if e.logprob is not None]
    return sum(scores) / len(scores) if scores else 0.0


class LegacyLogprobs:
    """Builds the completions ``logprobs`` object; ``text_offset`` runs on across calls.

    Offsets are characters into the prompt followed by the completion, as OpenAI counts them.
    """

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset

    def shape(self, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        tokens: list[str] = []
        token_logprobs: list[float | None] = []
        top_logprobs: list[dict[str, float] | None] = []
        text_offset: list[int] = []
        for entry in entries:
            tokens.append(entry.token)
            text_offset.append(self.offset)
            self.offset += len(entry.bytes.decode("utf-8", errors="ignore"))
            if entry.logprob is None:  # the first token of an echoed prompt
                token_logprobs.append(None)
                top_logprobs.append(None)
                continue
            token_logprobs.append(_finite(entry.logprob))
            best = {top.token: _finite(top.logprob) for top in entry.top}
            best.setdefault(entry.token, _finite(entry.logprob))
            top_logprobs.append(best)
        return {
            "tokens": tokens,
            "token_logprobs": token_logprobs,
            "top_logprobs": top_logprobs,
            "text_offset": text_offset,
        }
