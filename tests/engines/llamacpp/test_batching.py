"""Continuous batching, prefix reuse, n > 1 and admission control, with the real model."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cerulean.engines.base import (
    ChatMessage,
    Generation,
    GenerationRequest,
    ResponseFormat,
    SamplingParams,
)
from cerulean.engines.llamacpp import LlamaCppEngine, ModelSpec
from cerulean.engines.llamacpp.prompts import EMBEDDED_FORMAT
from cerulean.errors import InvalidRequest, ServerBusy, ServiceUnavailable
from cerulean.packaged.gemma import ensure_embedded_model

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]

# About 600 tokens: long enough that computing it twice would show in the counters.
LONG_SYSTEM = "You are the assistant of Contoso. " + " ".join(
    f"Rule {i}: answer politely and mention policy number {i * 7}." for i in range(50)
)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_embedded_model(Path(tmp_path_factory.mktemp("models")), progress=False)


def make_engine(path: Path, **overrides: Any) -> LlamaCppEngine:
    options: dict[str, Any] = {
        "n_ctx": 1024,
        "n_threads": 2,
        "default_max_tokens": 32,
        "base_format": EMBEDDED_FORMAT,
        "parallel": 4,
    }
    options.update(overrides)
    engine = LlamaCppEngine(ModelSpec("gemma-3-270m", path, **options))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def engine(model_path: Path) -> Iterator[LlamaCppEngine]:
    built = make_engine(model_path)
    yield built
    asyncio.run(built.aclose())


def chat(user: str, system: str = "You are a helpful assistant.") -> tuple[ChatMessage, ...]:
    return (ChatMessage("system", system), ChatMessage("user", user))


async def answer(
    engine: LlamaCppEngine, messages: tuple[ChatMessage, ...], n: int = 1, **params: Any
) -> dict[int, str]:
    params.setdefault("temperature", 0)
    params.setdefault("max_tokens", 16)
    response_format = params.pop("response_format", None)
    request = GenerationRequest(
        messages, SamplingParams(**params), n=n, response_format=response_format
    )
    return await drain(await engine.generate(request))


async def drain(generation: Generation) -> dict[int, str]:
    texts: dict[int, str] = {}
    finished: set[int] = set()
    async for chunk in generation:
        texts[chunk.index] = texts.get(chunk.index, "") + chunk.text
        if chunk.finish_reason:
            finished.add(chunk.index)
    assert finished == set(texts)
    return texts


def counters(engine: LlamaCppEngine) -> dict[str, int]:
    return engine.stats()


def test_concurrent_requests_all_finish_with_their_own_answers(engine: LlamaCppEngine) -> None:
    questions = [f"Tell me about the number {i}." for i in range(6)]

    async def scenario() -> list[dict[int, str]]:
        return await asyncio.gather(*(answer(engine, chat(q)) for q in questions))

    started = counters(engine)["admitted"]
    together = asyncio.run(scenario())
    assert counters(engine)["admitted"] - started == 6
    alone = [asyncio.run(answer(engine, chat(q))) for q in questions]
    # Greedy decoding: batching must not mix sequences up (each answer is its own).
    same = sum(t == a for t, a in zip(together, alone, strict=True))
    assert same >= 5, (together, alone)
    stats = counters(engine)
    assert stats["slots_busy"] == 0 and stats["running"] == 0 and stats["kv_tokens"] == 0


def test_shared_system_prompt_is_computed_once_for_concurrent_chats(
    engine: LlamaCppEngine,
) -> None:
    system = "Session A. " + LONG_SYSTEM
    system_tokens = asyncio.run(engine.count_prompt_tokens((ChatMessage("system", system),)))
    assert system_tokens > 500
    before = counters(engine)

    async def scenario() -> None:
        await asyncio.gather(*(answer(engine, chat(f"Question {i}?", system)) for i in range(4)))

    asyncio.run(scenario())
    after = counters(engine)
    computed = after["prompt_tokens_computed"] - before["prompt_tokens_computed"]
    reused = after["prompt_tokens_reused"] - before["prompt_tokens_reused"]
    assert reused >= 3 * (system_tokens - 20), (computed, reused)
    assert computed < 2 * system_tokens, (computed, reused)


def test_a_repeated_system_prompt_is_taken_from_the_cache(engine: LlamaCppEngine) -> None:
    system = "Session B. " + LONG_SYSTEM
    system_tokens = asyncio.run(engine.count_prompt_tokens((ChatMessage("system", system),)))
    asyncio.run(answer(engine, chat("First question?", system), max_tokens=24))
    before = counters(engine)
    asyncio.run(answer(engine, chat("A different second question?", system)))
    after = counters(engine)
    assert after["prompt_tokens_reused"] - before["prompt_tokens_reused"] >= system_tokens - 20
    assert after["prompt_tokens_computed"] - before["prompt_tokens_computed"] < 40


def test_cached_prefix_gives_the_same_greedy_answer(engine: LlamaCppEngine) -> None:
    # Prompts are computed in canonical chunks, so the cached and the cold path see the same
    # prompt KV. (Bitwise equality at temperature > 0 is not promised: where new KV cells land
    # in the shared cache changes the order attention sums in; see docs/differences.md.)
    messages = chat("Write a short poem about rain.", "Session C. " + LONG_SYSTEM)
    first = asyncio.run(answer(engine, messages, max_tokens=24))
    before = counters(engine)["prompt_tokens_reused"]
    second = asyncio.run(answer(engine, messages, max_tokens=24))
    assert counters(engine)["prompt_tokens_reused"] - before > 500
    assert first == second


def test_a_seeded_sampled_answer_does_not_depend_on_the_cache(model_path: Path) -> None:
    """Same seed, temperature 1, sent alone: the same answers on a fresh engine and after other
    chats have filled the prefix cache (the request starts from an empty KV cache)."""
    fresh = make_engine(model_path)
    try:
        messages = chat("Write a short poem about rain.", "Session S. " + LONG_SYSTEM)
        params: dict[str, Any] = {"temperature": 1.0, "seed": 42, "max_tokens": 40}
        cold = asyncio.run(answer(fresh, messages, n=3, **params))
        for i in range(3):  # other chats, cached prefixes and cells all over the cache
            other = chat(f"Tell me a fact about the number {i}.", f"Session T{i}. " + LONG_SYSTEM)
            asyncio.run(answer(fresh, other, max_tokens=24, temperature=1.0))
        assert counters(fresh)["cached_prefixes"] > 0
        warm = asyncio.run(answer(fresh, messages, n=3, **params))
        assert warm == cold
    finally:
        asyncio.run(fresh.aclose())


def test_n_answers_come_from_one_prompt_evaluation(engine: LlamaCppEngine) -> None:
    messages = chat("Name a colour.", "Session D. " + LONG_SYSTEM)
    prompt = asyncio.run(engine.count_prompt_tokens(messages))
    before = counters(engine)
    texts = asyncio.run(answer(engine, messages, n=3, temperature=1.0, seed=11, max_tokens=24))
    after = counters(engine)
    assert sorted(texts) == [0, 1, 2]
    assert len(set(texts.values())) > 1  # each choice samples with its own derived seed
    assert after["prompt_tokens_computed"] - before["prompt_tokens_computed"] <= prompt


def test_more_choices_than_slots_run_in_waves(engine: LlamaCppEngine) -> None:
    """n beyond --parallel: waves of at most the slots, indexes and seeds as in one job."""
    slots = engine.spec.parallel
    n = slots + 2
    texts = asyncio.run(answer(engine, chat("hi"), n=n, temperature=1.0, seed=7, max_tokens=6))
    assert sorted(texts) == list(range(n))
    assert len(set(texts.values())) > 1  # each choice its own seed (seed + index), waves too
    assert counters(engine)["slots_busy"] == 0


def test_cancelling_frees_slots_and_cells_at_once(engine: LlamaCppEngine) -> None:
    async def scenario() -> dict[str, int]:
        # At temperature 2 the base model rambles: no stop string ends it early.
        params = SamplingParams(temperature=2.0, max_tokens=300, seed=3)
        generations = [
            await engine.generate(
                GenerationRequest(chat(f"Write a long story number {i}."), params)
            )
            for i in range(3)
        ]
        unfinished = 0
        streams = [generation.__aiter__() for generation in generations]  # keep them referenced
        for stream in streams:
            first = await stream.__anext__()
            unfinished += first.finish_reason is None
        busy = counters(engine)["slots_busy"]
        assert unfinished, "every answer ended at its first chunk; nothing to cancel"
        assert busy == unfinished
        for generation in generations:
            await generation.aclose()
        deadline = time.monotonic() + 2
        while counters(engine)["slots_busy"] and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return {"busy_before": busy, **counters(engine)}

    stats = asyncio.run(scenario())
    assert stats["slots_busy"] == 0 and stats["kv_tokens"] == 0 and stats["running"] == 0


def test_a_full_line_is_a_429_and_a_long_wait_a_503(model_path: Path) -> None:
    small = make_engine(model_path, parallel=1, queue_size=1, queue_timeout=0.5)

    async def scenario() -> None:
        params = SamplingParams(temperature=2.0, max_tokens=400, seed=3)
        running = await small.generate(GenerationRequest(chat("Story"), params))
        waiting = asyncio.create_task(small.generate(GenerationRequest(chat("Next"), params)))
        await asyncio.sleep(0.1)
        with pytest.raises(ServerBusy) as busy:
            await small.generate(GenerationRequest(chat("Third"), params))
        assert busy.value.status_code == 429
        assert busy.value.headers["retry-after"] == "1"
        assert busy.value.headers["retry-after-ms"] == "1000"
        with pytest.raises(ServiceUnavailable) as unavailable:
            await waiting
        assert unavailable.value.status_code == 503 and "retry-after" in unavailable.value.headers
        await running.aclose()
        # The line is empty again: the next request gets the slot.
        assert await drain(await small.generate(GenerationRequest(chat("Later"))))

    try:
        asyncio.run(scenario())
        stats = small.stats()
        assert stats["rejected"] == 1 and stats["waiting"] == 0 and stats["slots_busy"] == 0
    finally:
        asyncio.run(small.aclose())


def test_a_burst_is_admitted_up_to_slots_plus_line(model_path: Path) -> None:
    small = make_engine(model_path, parallel=2, queue_size=1, queue_timeout=30)

    async def scenario() -> tuple[int, int]:
        params = SamplingParams(temperature=2.0, max_tokens=400, seed=5)
        tasks = [
            asyncio.create_task(small.generate(GenerationRequest(chat(f"Story {i}"), params)))
            for i in range(6)
        ]
        await asyncio.sleep(1.0)  # two admitted, one waiting, three refused at once
        refused = sum(t.done() and isinstance(t.exception(), ServerBusy) for t in tasks)
        waiting = small.stats()["waiting"]
        for task in tasks:
            if task.done() and task.exception() is None:
                await task.result().aclose()
            elif not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return refused, waiting

    try:
        refused, waiting = asyncio.run(scenario())
        assert (refused, waiting) == (3, 1)
        deadline = time.monotonic() + 5
        while small.stats()["slots_busy"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert small.stats()["slots_busy"] == 0 and small.stats()["waiting"] == 0
    finally:
        asyncio.run(small.aclose())


def test_a_grammar_constrains_each_sequence_on_its_own(engine: LlamaCppEngine) -> None:
    yes_no = 'root ::= "yes" | "no"'
    digits = "root ::= [0-9] [0-9] [0-9]"

    async def scenario() -> list[dict[int, str]]:
        return await asyncio.gather(
            answer(engine, chat("Is the sky blue?"), grammar=yes_no, temperature=1.0, seed=1),
            answer(engine, chat("Pick a number."), grammar=digits, temperature=1.0, seed=2),
            answer(engine, chat("Say something.")),
        )

    constrained, number, free = asyncio.run(scenario())
    assert constrained[0] in {"yes", "no"}
    assert len(number[0]) == 3 and number[0].isdigit()
    assert free[0]


def test_a_broken_grammar_is_a_400_before_any_output(engine: LlamaCppEngine) -> None:
    with pytest.raises(InvalidRequest, match="GBNF"):
        asyncio.run(answer(engine, chat("hi"), grammar="root ::= (("))
    assert counters(engine)["slots_busy"] == 0


def test_the_next_turn_of_a_chat_reuses_the_previous_one(engine: LlamaCppEngine) -> None:
    system = "Session E. " + LONG_SYSTEM
    first_turn = chat("What is your policy number 7?", system)
    reply = asyncio.run(answer(engine, first_turn, max_tokens=24))[0]
    second_turn = (
        *first_turn,
        ChatMessage("assistant", reply),
        ChatMessage("user", "And number 14?"),
    )
    before = counters(engine)
    asyncio.run(answer(engine, second_turn))
    after = counters(engine)
    history = asyncio.run(engine.count_prompt_tokens(first_turn))
    assert after["prompt_tokens_reused"] - before["prompt_tokens_reused"] >= history - 16


def test_logit_bias_forces_and_bans_tokens(engine: LlamaCppEngine) -> None:
    model = engine._require_model()
    target = model.tokenize(" banana", add_bos=False)[0]
    forced = asyncio.run(
        answer(engine, chat("Say hello."), max_tokens=3, logit_bias=((target, 100.0),))
    )
    assert forced[0].startswith("banana")
    plain = asyncio.run(answer(engine, chat("Say hello."), max_tokens=8))[0]
    first = model.tokenize(" " + plain, add_bos=False)[0] if plain else None
    if first is not None:
        banned = asyncio.run(
            answer(engine, chat("Say hello."), max_tokens=8, logit_bias=((first, -100.0),))
        )[0]
        assert banned != plain
    with pytest.raises(InvalidRequest, match="logit_bias"):
        asyncio.run(answer(engine, chat("hi"), logit_bias=((model.n_vocab, 1.0),)))


def test_response_format_json_object_and_schema_always_parse(engine: LlamaCppEngine) -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": ["yes", "no"]},
            "confidence": {"type": "integer"},
        },
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    }

    async def scenario() -> list[dict[int, str]]:
        question = chat("Is water wet? Answer in JSON.")
        return await asyncio.gather(
            answer(
                engine,
                question,
                max_tokens=48,
                response_format=ResponseFormat("json_schema", schema),
            ),
            answer(
                engine,
                question,
                max_tokens=48,
                temperature=1.0,
                seed=3,
                response_format=ResponseFormat("json_schema", schema),
            ),
        )

    for texts in asyncio.run(scenario()):
        value = json.loads(texts[0])
        assert set(value) == {"answer", "confidence"}
        assert value["answer"] in ("yes", "no") and isinstance(value["confidence"], int)
    loose = asyncio.run(
        answer(
            engine,
            chat("Reply with {}."),
            max_tokens=64,
            response_format=ResponseFormat("json_object"),
        )
    )[0]
    assert loose.startswith("{")


def test_an_inexpressible_schema_is_a_400(engine: LlamaCppEngine) -> None:
    bad = ResponseFormat("json_schema", {"$ref": "#/definitions/missing"})
    with pytest.raises(InvalidRequest, match="response_format"):
        asyncio.run(answer(engine, chat("hi"), response_format=bad))


@pytest.mark.parametrize(
    "schema",
    [
        {"enum": []},
        {"type": "string", "pattern": "("},
        {"not": {}},
        {"$ref": "http://example.com/schema"},
        {"anyOf": []},
        {"type": 5},
    ],
)
def test_hostile_schemas_are_400s_not_crashes(
    engine: LlamaCppEngine, schema: dict[str, object]
) -> None:
    with pytest.raises(InvalidRequest):
        asyncio.run(
            answer(engine, chat("hi"), response_format=ResponseFormat("json_schema", schema))
        )
    assert counters(engine)["slots_busy"] == 0
