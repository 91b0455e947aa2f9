"""Fair sharing of the slots: how many of a request's choices may start together."""

from __future__ import annotations

from pathlib import Path

import pytest

from cerulean.engines.llamacpp import LlamaCppEngine, ModelSpec


class Line:
    """A stand-in scheduler: its slots and how many requests run or wait."""

    def __init__(self, slots: int, requests: int) -> None:
        self.slots = slots
        self._requests = requests

    def requests(self) -> int:
        return self._requests


def engine(slots: int, requests: int, *, fair: bool = True) -> LlamaCppEngine:
    built = LlamaCppEngine(ModelSpec("m", Path("m.gguf"), parallel=slots, fair_share=fair))
    built._scheduler = Line(slots, requests)  # type: ignore[assignment]
    return built


@pytest.mark.parametrize(
    ("choices", "others", "expected"),
    [
        (128, 0, 8),  # alone: every slot
        (3, 0, 3),
        (128, 1, 4),  # one other request: half the slots
        (128, 2, 2),
        (128, 3, 2),
        (128, 9, 1),  # crowded: one at a time, never none
        (3, 1, 3),  # within its share: all at once
        (8, 1, 4),  # n within the slots but beyond the share: waits for its second wave
    ],
)
def test_a_wave_is_at_most_the_fair_share(choices: int, others: int, expected: int) -> None:
    assert engine(8, others).wave_size(choices) == expected


def test_without_fair_sharing_a_wave_takes_every_slot() -> None:
    assert engine(8, 5, fair=False).wave_size(128) == 8
    assert engine(8, 5, fair=False).wave_size(3) == 3
