"""Function calling through the llama.cpp engine with the real model (issue 10, defects 2 and 4).

The engine gets the conversation and the tools as Azure defines them and gives back tool-call
deltas: never the grammar's text as content, at most one call without parallel calls, a cut
call as the call it is, and a streamed call name first, then its arguments piece by piece.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest

from cerulean.engines.base import (
    ChatMessage,
    EngineChunk,
    FunctionSpec,
    GenerationRequest,
    ResponseFormat,
    SamplingParams,
    ToolCall,
    Tools,
)
from cerulean.engines.llamacpp import LlamaCppEngine
from cerulean.engines.llamacpp.tools import MAX_PARALLEL_CALLS
from cerulean.errors import InvalidRequest
from cerulean.packaged.gemma import ensure_embedded_model
from tests.engines.llamacpp.test_batching import make_engine

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]

WEATHER = FunctionSpec(
    "get_weather",
    "Get the weather forecast for a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
)
ASK = (ChatMessage("user", "Weather in Paris for 3 days?"),)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppEngine]:
    path = ensure_embedded_model(Path(tmp_path_factory.mktemp("models")), progress=False)
    built = make_engine(path, parallel=8, n_ctx=2048, queue_timeout=600.0)
    yield built
    asyncio.run(built.aclose())


@dataclass
class Answer:
    """One choice as the engine gave it."""

    text: str = ""
    calls: dict[int, list[str]] = field(default_factory=dict)  # index -> [id, name, arguments]
    argument_chunks: int = 0  # chunks that carried a piece of arguments
    name_first: bool = True  # every call's name came before any of its arguments
    finish: str | None = None


def collect(chunks: list[EngineChunk]) -> dict[int, Answer]:
    answers: dict[int, Answer] = {}
    for chunk in chunks:
        answer = answers.setdefault(chunk.index, Answer())
        answer.text += chunk.text
        if any(d.arguments for d in chunk.tool_calls):
            answer.argument_chunks += 1
        for delta in chunk.tool_calls:
            if delta.name is not None:
                assert delta.id is not None and delta.id.startswith("call_")
                answer.calls[delta.index] = [delta.id, delta.name, ""]
            elif delta.index not in answer.calls:
                answer.name_first = False
                continue
            answer.calls[delta.index][2] += delta.arguments
        if chunk.finish_reason is not None:
            answer.finish = chunk.finish_reason
    return answers


async def run(
    engine: LlamaCppEngine, tools: Tools, *, n: int = 1, **params: object
) -> dict[int, Answer]:
    request = GenerationRequest(
        ASK,
        SamplingParams(**params),
        n=n,
        tools=tools,  # type: ignore[arg-type]
    )
    generation = await engine.generate(request)
    return collect([chunk async for chunk in generation])


def test_required_never_leaks_grammar_text(engine: LlamaCppEngine) -> None:
    """Twelve identical requests at the default temperature (the issue's reproduction): each
    answer is calls only, a cut call comes back as a call with ``length``, and parallel calls
    stay within the bound."""
    tools = Tools((WEATHER,), "required")

    async def twelve() -> list[dict[int, Answer]]:
        return await asyncio.gather(
            *(run(engine, tools, temperature=1.0, max_tokens=80, seed=s) for s in range(12))
        )

    for answers in asyncio.run(twelve()):
        answer = answers[0]
        assert answer.text == "", answer.text  # never content
        assert answer.calls, "required: the answer is a call"
        assert len(answer.calls) <= MAX_PARALLEL_CALLS
        assert answer.finish in ("tool_calls", "length")
        for _, name, arguments in answer.calls.values():
            assert name == "get_weather"
            if answer.finish == "tool_calls":
                jsonschema.validate(json.loads(arguments), dict(WEATHER.parameters))


def test_one_call_without_parallel_calls(engine: LlamaCppEngine) -> None:
    tools = Tools((WEATHER,), "required", parallel=False)
    answers = asyncio.run(run(engine, tools, n=6, temperature=1.0, max_tokens=80, seed=1))
    for answer in answers.values():
        assert answer.text == "" and len(answer.calls) == 1
        if answer.finish == "tool_calls":
            ((_, _, arguments),) = answer.calls.values()
            assert set(json.loads(arguments)) == {"city", "days"}


def test_a_call_cut_by_max_tokens_is_a_call_with_length(engine: LlamaCppEngine) -> None:
    tools = Tools((WEATHER,), "function", "get_weather")
    answer = asyncio.run(run(engine, tools, temperature=0, max_tokens=18))[0]
    assert answer.finish == "length" and answer.text == ""
    ((_, name, arguments),) = answer.calls.values()
    assert name == "get_weather"
    assert arguments.startswith("{")  # what was written of the arguments, cut
    with pytest.raises(json.JSONDecodeError):
        json.loads(arguments)


def test_streamed_calls_send_the_name_first_then_arguments_as_generated(
    engine: LlamaCppEngine,
) -> None:
    """Defect 4: the arguments arrive in many pieces while they are generated, after the name."""
    tools = Tools((WEATHER,), "function", "get_weather")
    answer = asyncio.run(run(engine, tools, temperature=0, max_tokens=80))[0]
    assert answer.finish == "tool_calls" and answer.name_first
    ((call_id, name, arguments),) = answer.calls.values()
    assert name == "get_weather"
    assert json.loads(arguments).keys() == {"city", "days"}
    assert answer.argument_chunks >= 4  # one per token or so, not one at the end


def test_auto_answers_in_text_or_calls(engine: LlamaCppEngine) -> None:
    chats = (
        (ChatMessage("user", "Say hello to me."),),
        ASK,
    )

    async def both() -> list[dict[int, Answer]]:
        out = []
        for messages in chats:
            request = GenerationRequest(
                messages,
                SamplingParams(temperature=1.0, seed=5, max_tokens=48),
                n=4,
                tools=Tools((WEATHER,), "auto"),
            )
            generation = await engine.generate(request)
            out.append(collect([chunk async for chunk in generation]))
        return out

    for answers in asyncio.run(both()):
        for answer in answers.values():
            if answer.calls:
                assert answer.text == "" and answer.finish in ("tool_calls", "length")
            else:
                assert answer.text and answer.text.lstrip()[0] not in "{["
                assert answer.finish in ("stop", "length")


def test_history_with_calls_and_results_is_rendered(engine: LlamaCppEngine) -> None:
    """The assistant's earlier call and the tool's result reach the prompt (the model sees the
    call in the form it is asked to write)."""
    history = (
        *ASK,
        ChatMessage(
            "assistant",
            None,
            tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Paris", "days": 3}'),),
        ),
        ChatMessage("tool", "Sunny, 24 C, all three days.", tool_call_id="call_1"),
        ChatMessage("user", "So, what is the weather like?"),
    )
    with_history = asyncio.run(engine.count_prompt_tokens(history))
    without = asyncio.run(engine.count_prompt_tokens((history[0], history[3])))
    assert with_history > without + 15
    request = GenerationRequest(
        history,
        SamplingParams(temperature=0, max_tokens=24),
        tools=Tools((WEATHER,), "none"),
    )

    async def text() -> str:
        return "".join([chunk.text async for chunk in await engine.generate(request)])

    assert asyncio.run(text())  # tool_choice none: a text answer


def test_tools_with_response_format_is_refused(engine: LlamaCppEngine) -> None:
    request = GenerationRequest(
        ASK,
        tools=Tools((WEATHER,), "auto"),
        response_format=ResponseFormat("json_object"),
    )
    with pytest.raises(InvalidRequest) as caught:
        asyncio.run(engine.generate(request))
    assert caught.value.code == "unsupported_parameter"
    assert engine.stats()["slots_busy"] == 0


def test_image_parts_are_refused_by_a_text_model(engine: LlamaCppEngine) -> None:
    from cerulean.engines.base import ContentPart

    image = ContentPart("image_url", raw={"type": "image_url", "image_url": {"url": "x"}})
    request = GenerationRequest((ChatMessage("user", (image,)),))
    with pytest.raises(InvalidRequest, match="text only"):
        asyncio.run(engine.generate(request))
