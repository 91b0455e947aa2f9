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
from cerulean.packaged.gemma import ensure_embedded_model
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
