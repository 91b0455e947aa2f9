"""The completion side of the pipeline on a generation whose choices differ: only the choice
that hits the blocklist is withheld, in each mode; the asynchronous mode's offsets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from cerulean.engines.base import EngineChunk, Generation
from cerulean.services.filtering.classifiers import BlocklistMatcher, JailbreakDetector
from cerulean.services.filtering.pipeline import SEGMENT, ContentFilter
from cerulean.services.filtering.policy import BlocklistUse, Policy

TEXTS = ["a fine answer " * 20, "this one says zanzibar " * 12]


class Scripted(Generation):
    """Two choices, interleaved word by word, then each one's finish."""

    prompt_tokens = 3

    def __aiter__(self) -> AsyncIterator[EngineChunk]:
        return self._run()

    async def _run(self) -> AsyncIterator[EngineChunk]:
        words = [t.split(" ") for t in TEXTS]
        for step in range(max(len(w) for w in words)):
            for index, choice in enumerate(words):
                if step < len(choice):
                    yield EngineChunk(text=choice[step] + " ", index=index)
        for index in range(len(TEXTS)):
            yield EngineChunk(
                index=index, finish_reason="stop", prompt_tokens=3, completion_tokens=40
            )

    async def aclose(self) -> None:
        pass


def content_filter(mode: str = "Default") -> ContentFilter:
    policy = Policy(name="p", mode=mode, completion_blocklists=(BlocklistUse("words"),))
    lists = {"words": BlocklistMatcher("words", [("zanzibar", False)])}
    return ContentFilter(policy, lists, None, JailbreakDetector())


async def collect(stream: bool, mode: str = "Default") -> list[EngineChunk]:
    return [c async for c in content_filter(mode).wrap(Scripted(), stream=stream)]


def texts(chunks: list[EngineChunk]) -> dict[int, str]:
    out: dict[int, str] = {}
    for c in chunks:
        out[c.index] = out.get(c.index, "") + c.text
    return out


def finishes(chunks: list[EngineChunk]) -> dict[int, str | None]:
    return {c.index: c.finish_reason for c in chunks if c.finish_reason}


def test_json_withholds_only_the_choice_that_hits() -> None:
    chunks = asyncio.run(collect(stream=False))
    assert finishes(chunks) == {0: "stop", 1: "content_filter"}
    assert texts(chunks)[0].strip() == TEXTS[0].strip() and texts(chunks)[1] == ""
    last = [c for c in chunks if c.index == 1][-1]
    assert last.completion_tokens == 40  # the usage is still counted
    assert last.filter_results is not None
    assert last.filter_results["custom_blocklists"]["details"] == [
        {"filtered": True, "id": "words"}
    ]


def test_the_default_stream_releases_checked_segments() -> None:
    chunks = asyncio.run(collect(stream=True))
    assert finishes(chunks) == {0: "stop", 1: "content_filter"}
    released = [c for c in chunks if c.index == 0 and c.text]
    assert len(released) > 1 and all(len(c.text) >= SEGMENT for c in released[:-1])
    assert all(
        c.filter_results and not c.filter_results["custom_blocklists"]["filtered"] for c in released
    )
    assert "zanzibar" not in texts(chunks)[1]


def test_the_asynchronous_stream_annotates_offsets_and_ends_a_violation() -> None:
    chunks = asyncio.run(collect(stream=True, mode="Asynchronous_filter"))
    assert finishes(chunks) == {0: "stop", 1: "content_filter"}
    notes = [c for c in chunks if c.filter_offsets is not None and c.index == 0]
    assert notes[0].filter_offsets == {
        "check_offset": 0,
        "start_offset": 0,
        "end_offset": notes[0].filter_offsets["end_offset"],
    }
    assert notes[-1].filter_offsets is not None
    assert notes[-1].filter_offsets["end_offset"] == len(texts(chunks)[0])
    # text went out before its check: the violating choice's first words reached the client
    assert texts(chunks)[1].startswith("this one says zanzibar")
