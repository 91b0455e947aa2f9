"""Log probabilities: the log-softmax, which tokens travel with which chunk, the wire shapes."""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import pytest

from cerulean.engines.base import TokenLogprob, TopLogprob
from cerulean.engines.llamacpp.jobs import Choice
from cerulean.engines.llamacpp.logprobs import log_softmax_at
from cerulean.engines.llamacpp.text import TextAssembler
from cerulean.errors import InvalidRequest
from cerulean.services.logprobs import (
    FLOOR,
    LegacyLogprobs,
    chat_logprobs,
    chat_logprobs_param,
    mean_logprob,
)


def test_log_softmax_matches_the_definition() -> None:
    logits = np.random.default_rng(1).normal(0, 5, 5000).astype(np.float32)
    chosen, top = log_softmax_at(logits, 17, 5)
    exact = logits.astype(np.float64)
    norm = math.log(np.exp(exact - exact.max()).sum()) + exact.max()
    assert chosen == pytest.approx(exact[17] - norm, abs=1e-5)
    assert [t for t, _ in top] == list(np.argsort(-exact)[:5])
    values = [lp for _, lp in top]
    assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
    assert math.exp(values[0]) <= 1.0


def test_probabilities_sum_to_one_and_huge_logits_do_not_overflow() -> None:
    logits = np.array([1000.0, 999.0, -50.0, 0.0], dtype=np.float32)
    _, top = log_softmax_at(logits, 0, 4)
    assert sum(math.exp(lp) for _, lp in top) == pytest.approx(1.0)
    assert top[0][0] == 0 and top[0][1] <= 0.0


def test_no_alternatives_and_more_asked_than_the_vocabulary() -> None:
    logits = np.array([0.0, 1.0], dtype=np.float32)
    assert log_softmax_at(logits, 1, 0)[1] == []
    assert [t for t, _ in log_softmax_at(logits, 1, 9)[1]] == [1, 0]


def entry(token: str, logprob: float = -1.0) -> TokenLogprob:
    return TokenLogprob(token, logprob, token.encode(), (TopLogprob(token, logprob, b""),))


def make_choice(stops: tuple[str, ...] = (), *, trim: bool = True) -> Choice:
    return Choice(0, 0, cast(Any, None), TextAssembler(stops, trim=trim), n_kv=0)


def feed(choice: Choice, pieces: list[str]) -> list[tuple[str, list[str]]]:
    """What the scheduler does per token: score, feed, emit text with the released tokens."""
    out = []
    for piece in pieces:
        choice.scored.append((choice.text.consumed, entry(piece)))
        text, stopped = choice.text.feed(piece.encode())
        if text:
            out.append((text, [e.token for e in choice.release()]))
        if stopped:
            break
    return out


def test_tokens_travel_with_the_chunk_that_shows_their_text() -> None:
    choice = make_choice()
    assert feed(choice, [" ", "Hello", " ", "world"]) == [
        ("Hello", [" ", "Hello"]),
        (" world", [" ", "world"]),
    ]


def test_tokens_of_a_stop_string_are_never_released() -> None:
    choice = make_choice(("\nUser:",))
    assert feed(choice, ["Yes", ".", "\n", "User", ":"]) == [("Yes", ["Yes"]), (".", ["."])]
    assert choice.text.finish(stopped=True) == ""
    assert choice.release() == ()


def test_at_a_natural_end_every_token_is_released() -> None:
    choice = make_choice()
    feed(choice, ["Hi", "\n"])
    assert choice.text.finish(stopped=False) == ""
    assert [e.token for e in choice.release(everything=True)] == ["\n"]


def test_raw_text_keeps_its_whitespace() -> None:
    choice = make_choice(trim=False)
    assert feed(choice, [" Paris", ".", "\n"]) == [
        (" Paris", [" Paris"]),
        (".", ["."]),
        ("\n", ["\n"]),
    ]


def test_chat_shape() -> None:
    shaped = chat_logprobs([TokenLogprob("Hi", -0.5, b"Hi", (TopLogprob("Hi", -0.5, b"Hi"),))])
    assert shaped == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.5,
                "bytes": [72, 105],
                "top_logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105]}],
            }
        ],
        "refusal": None,
    }


def test_infinities_are_floored() -> None:
    shaped = chat_logprobs([TokenLogprob("x", -math.inf, b"x")])
    assert shaped["content"][0]["logprob"] == FLOOR


def test_legacy_shape_counts_offsets_from_the_prompt_and_adds_the_chosen_token() -> None:
    shaper = LegacyLogprobs(offset=5)
    first = TokenLogprob(" a", -0.1, b" a", (TopLogprob(" b", -0.05, b" b"),))
    second = TokenLogprob("\u20ac", -0.2, "\u20ac".encode(), ())
    assert shaper.shape([first, second]) == {
        "tokens": [" a", "\u20ac"],
        "token_logprobs": [-0.1, -0.2],
        "top_logprobs": [{" b": -0.05, " a": -0.1}, {"\u20ac": -0.2}],
        "text_offset": [5, 7],
    }
    assert shaper.shape([first])["text_offset"] == [8]


def test_mean_logprob_ranks_best_of() -> None:
    assert mean_logprob([entry("a", -1.0), entry("b", -3.0)]) == -2.0
    assert mean_logprob([]) == 0.0


def test_top_logprobs_needs_logprobs_true() -> None:
    assert chat_logprobs_param(None, None) is None
    assert chat_logprobs_param(True, None) == 0
    assert chat_logprobs_param(True, 3) == 3
    with pytest.raises(InvalidRequest) as caught:
        chat_logprobs_param(False, 2)
    assert caught.value.param == "top_logprobs"
    assert "'logprobs' must be set to true" in caught.value.message
