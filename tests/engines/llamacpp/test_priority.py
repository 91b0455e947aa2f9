"""Batch priority in the decode loop, with the real model: batch jobs fill every slot when
nothing else runs, wait behind online jobs, and give a slot back to an online job at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cerulean.engines.base import ChatMessage, GenerationRequest, Preempted, SamplingParams
from cerulean.engines.llamacpp import LlamaCppEngine
from cerulean.engines.llamacpp.build import build_default_embedder
from cerulean.engines.llamacpp.scheduler import BATCH_SHARE_WHILE_ONLINE
from cerulean.engines.llamacpp.turns import CpuTurns
from cerulean.packaged.gemma import ensure_embedded_model
from cerulean.settings import Settings
from tests.engines.llamacpp.test_batching import make_engine

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppEngine]:
    path = ensure_embedded_model(Path(tmp_path_factory.mktemp("models")), progress=False)
    built = make_engine(path, parallel=2)
    yield built
    asyncio.run(built.aclose())


def request(text: str, priority: str, tokens: int) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage("user", text),),
        params=SamplingParams(temperature=0, max_tokens=tokens),
        priority=priority,  # type: ignore[arg-type]
    )


async def drain(engine: LlamaCppEngine, wanted: GenerationRequest) -> str:
    generation = await engine.generate(wanted)
    return "".join([chunk.text async for chunk in generation])


def test_batch_fills_every_slot_and_online_preempts(engine: LlamaCppEngine) -> None:
    async def scenario() -> tuple[list[object], float, dict[str, int]]:
        # Four batch jobs on two slots: two run, two wait in the batch line.
        batch = [
            asyncio.create_task(drain(engine, request(f"Tell a long story {i}.", "batch", 200)))
            for i in range(4)
        ]
        deadline = time.monotonic() + 30
        while engine.stats()["slots_busy"] < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        full = engine.stats()
        started = time.monotonic()
        online = await engine.generate(request("Say hi.", "online", 4))
        waited = time.monotonic() - started
        async for _ in online:
            pass
        await asyncio.sleep(0.1)
        # Done by now: only the preempted ones (a 200-token answer takes far longer).
        preempted = [t.exception() for t in batch if t.done()]
        for task in batch:  # the rest would run their 200 tokens: not needed here
            task.cancel()
        await asyncio.gather(*batch, return_exceptions=True)
        results: list[object] = list(preempted)
        while engine.stats()["slots_busy"]:  # the cancelled ones leave at the next step
            assert time.monotonic() < deadline + 30
            await asyncio.sleep(0.01)
        return results, waited, full

    results, waited, full = asyncio.run(scenario())
    assert full["slots_busy"] == 2 and full["batch_running"] == 2  # full width on batch work
    assert full["batch_waiting"] == 2
    # The online job did not wait for a 200-token batch answer: a batch job made way, and no
    # batch job had finished when the online one had.
    assert results and all(isinstance(r, Preempted) for r in results), (results, waited)
    assert engine.stats()["batch_preempted"] >= 1
    assert engine.stats()["slots_busy"] == 0


def test_an_online_job_interrupts_a_step_of_batch_work(engine: LlamaCppEngine) -> None:
    """An online job that arrives while batch work alone decodes stops that decode; the batch
    job decodes the same tokens again and its answer is the one it gives undisturbed."""
    wanted = request("Count from one to fifty in words.", "batch", 48)

    async def undisturbed() -> str:
        return await drain(engine, wanted)

    async def disturbed() -> tuple[str, int]:
        before = engine.stats()["batch_steps_interrupted"]
        batch = asyncio.create_task(drain(engine, wanted))
        deadline = time.monotonic() + 60
        while engine.stats()["batch_running"] < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        for i in range(4):  # each arrives during a batch-only step (the online one is done)
            await asyncio.sleep(0.05)
            await drain(engine, request(f"Say hi {i}.", "online", 2))
        text = await batch
        return text, engine.stats()["batch_steps_interrupted"] - before

    alone = asyncio.run(undisturbed())
    text, interrupted = asyncio.run(disturbed())
    assert interrupted >= 1
    assert text == alone  # nothing lost or decoded twice at one position (greedy)
    assert engine.stats()["slots_busy"] == 0 and engine.stats()["kv_tokens"] == 0


def test_an_embedding_interrupts_a_step_of_batch_work(tmp_path: Path) -> None:
    """The chat model and the embedder share the CPU in turns: an embedding (an online
    content-filter check) cuts a batch-only decode step short instead of sharing the cores."""
    turns = CpuTurns()
    path = ensure_embedded_model(tmp_path / "models", progress=False)
    chat_engine = make_engine(path, parallel=2, turns=turns)
    built = build_default_embedder(Settings(home=tmp_path, n_threads=2), turns=turns)
    assert built is not None
    embedder = built[0]
    embedder.load()
    wanted = request("Count from one to fifty in words.", "batch", 48)

    async def scenario() -> tuple[str, int]:
        alone = await drain(chat_engine, wanted)
        batch = asyncio.create_task(drain(chat_engine, wanted))
        while chat_engine.stats()["batch_running"] < 1:
            await asyncio.sleep(0.005)
        for _ in range(5):
            await asyncio.sleep(0.03)
            await embedder.embed(["Is this text harmful?"])
        assert await batch == alone  # interrupted steps are decoded again, nothing lost
        return alone, chat_engine.stats()["batch_steps_interrupted"]

    try:
        _, interrupted = asyncio.run(scenario())
    finally:
        asyncio.run(embedder.aclose())
        asyncio.run(chat_engine.aclose())
    assert interrupted >= 1 and turns.interrupted >= 1


def test_batch_jobs_take_one_step_in_eight_while_an_online_answer_runs(
    engine: LlamaCppEngine,
) -> None:
    """While an online answer is generated the batch job keeps its slot but joins only one
    step in BATCH_SHARE_WHILE_ONLINE: it moves, slowly, and the online answer runs at nearly
    an idle engine's pace."""

    def counting(priority: str, tokens: int) -> GenerationRequest:  # runs to max_tokens
        return GenerationRequest(
            messages=(),
            prompt="1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
            params=SamplingParams(temperature=0, max_tokens=tokens),
            priority=priority,  # type: ignore[arg-type]
        )

    async def scenario() -> tuple[int, int]:
        stamps: list[float] = []

        async def batch_reader() -> None:
            generation = await engine.generate(counting("batch", 150))
            async for chunk in generation:
                if chunk.text:
                    stamps.append(time.monotonic())

        task = asyncio.create_task(batch_reader())
        deadline = time.monotonic() + 60
        while len(stamps) < 3:  # the batch job is decoding
            assert time.monotonic() < deadline and not task.done(), task
            await asyncio.sleep(0.005)
        began = time.monotonic()
        online = await engine.generate(counting("online", 40))
        tokens = sum([1 async for chunk in online if chunk.text])
        ended = time.monotonic()
        await task
        return tokens, sum(began <= t <= ended for t in stamps)

    online_tokens, batch_during = asyncio.run(scenario())
    assert online_tokens >= 20
    # Without the share the batch job would show about one piece per online token.
    assert batch_during <= online_tokens // BATCH_SHARE_WHILE_ONLINE + 3, (
        online_tokens,
        batch_during,
    )
    assert batch_during >= 1  # it is not starved
    assert engine.stats()["slots_busy"] == 0
