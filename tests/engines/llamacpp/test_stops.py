from __future__ import annotations

import pytest

from cerulean.engines.llamacpp.stops import StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_no_stops_passes_text_through() -> None:
    assert feed_all(StopMatcher([]), ["a", "b"]) == ("ab", False)


def test_stop_split_across_pieces_is_never_emitted() -> None:
    matcher = StopMatcher(["\nUser:"])
    assert matcher.feed("Hello") == ("Hello", False)
    assert matcher.feed("\nUs") == ("", False)
    assert matcher.feed("er: hi") == ("", True)


def test_false_alarm_is_released() -> None:
    matcher = StopMatcher(["\nUser:"])
    assert matcher.feed("a\nU") == ("a", False)
    assert matcher.feed("nder") == ("\nUnder", False)


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["one END two"], ("one ", True)),
        (["oneEN", "D"], ("one", True)),
        (["x", "STOP", "END"], ("x", True)),
        (["E", "N"], ("EN", False)),
    ],
)
def test_earliest_stop_wins(pieces: list[str], expected: tuple[str, bool]) -> None:
    assert feed_all(StopMatcher(["END", "STOP"]), pieces) == expected
