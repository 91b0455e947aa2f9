"""The chat service's translation of a wire request into the engine's terms (no HTTP, no model)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cerulean.engines.base import (
    ChatMessage,
    ContentPart,
    GenerationRequest,
    ResponseFormat,
    ToolCall,
    ToolCallDelta,
)
from cerulean.engines.fake import FakeEngine, Piece
from cerulean.errors import ContextLengthExceeded, InvalidRequest, RateLimited
from cerulean.protocol.apiversions import parse_api_version
from cerulean.protocol.chat import CreateChatCompletionRequest
from cerulean.quota.memory import InProcessRateLimiter
from cerulean.services.admission import Quota
from cerulean.services.answers import InferenceCall
from cerulean.services.chat import create_chat_completion, to_generation_request
from cerulean.store.base import DeploymentRecord
from tests.store.legacy import NOW

USER = {"role": "user", "content": "hi"}


def translate(**body: Any) -> GenerationRequest:
    return to_generation_request(CreateChatCompletionRequest.model_validate(body))


def test_the_conversation_keeps_roles_calls_results_and_parts() -> None:
    request = translate(
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": "42"},
        ]
    )
    system, user, assistant, tool = request.messages
    assert system.content == (
        ContentPart("text", "Be brief.", {"type": "text", "text": "Be brief."}),
    )
    assert system.text == "Be brief." and user == ChatMessage("user", "hi")
    assert assistant.content is None and assistant.tool_calls == (ToolCall("call_9", "f", "{}"),)
    assert tool.role == "tool" and tool.tool_call_id == "call_9" and tool.text == "42"


def test_legacy_function_messages() -> None:
    request = translate(
        messages=[
            USER,
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "f", "arguments": "{}"},
            },
            {"role": "function", "name": "f", "content": "done"},
        ]
    )
    assert request.messages[1].function_call == ToolCall("", "f", "{}")
    assert request.messages[2].name == "f"


def test_sampling_defaults_and_max_completion_tokens_first() -> None:
    plain = translate(messages=[USER])
    assert plain.params.temperature == 1.0 and plain.params.top_p == 1.0
    assert plain.params.max_tokens is None and plain.params.stop == () and plain.n == 1
    both = translate(messages=[USER], max_tokens=5, max_completion_tokens=7, stop="x", n=2)
    assert both.params.max_tokens == 7 and both.params.stop == ("x",) and both.n == 2


def test_response_format_carries_name_strict_and_schema() -> None:
    spec = {"name": "answer", "strict": True, "schema": {"type": "object"}}
    request = translate(
        messages=[USER], response_format={"type": "json_schema", "json_schema": spec}
    )
    assert request.response_format == ResponseFormat(
        "json_schema", {"type": "object"}, "answer", True
    )
    assert request.tools is None


def test_json_object_needs_the_word_json() -> None:
    with pytest.raises(InvalidRequest) as caught:
        translate(messages=[USER], response_format={"type": "json_object"})
    assert caught.value.param == "messages"
    ok = translate(
        messages=[{"role": "user", "content": "Answer in JSON"}],
        response_format={"type": "json_object"},
    )
    assert ok.response_format == ResponseFormat("json_object")


def test_logprobs_become_the_engines_count() -> None:
    assert translate(messages=[USER], logprobs=True, top_logprobs=3).params.logprobs == 3
    assert translate(messages=[USER], logprobs=True).params.logprobs == 0
    assert translate(messages=[USER]).params.logprobs is None


# -- the whole service, on the fake engine ---------------------------------------------------------


def call_on(engine: FakeEngine, capacity: int = 1000) -> InferenceCall[Any]:
    record = DeploymentRecord("d", engine.info.name, "1", capacity, "Standard", NOW)
    version = parse_api_version("2024-10-21")
    assert version is not None
    quota = Quota(InProcessRateLimiter(), lambda: 1000.0, version.text)
    return InferenceCall(record, engine, version, quota, "req-1")


def run(engine: FakeEngine, body: dict[str, Any], capacity: int = 1000) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        engine.load()
        wire = CreateChatCompletionRequest.model_validate(body)
        answer = await create_chat_completion(call_on(engine, capacity), wire)
        assert answer.headers["x-ms-deployment-name"] == "d"
        assert "x-ratelimit-remaining-tokens" in answer.headers
        return await answer.collect()

    return asyncio.run(main())


def test_a_call_answer_is_shaped_from_the_engines_deltas() -> None:
    pieces: list[Piece] = [ToolCallDelta(0, "call_1", "f"), ToolCallDelta(0, arguments="{}")]
    engine = FakeEngine(lambda _request: pieces, context_length=512)
    tools = [{"type": "function", "function": {"name": "f"}}]
    body = run(engine, {"messages": [USER], "tools": tools})
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}


def test_context_length_is_checked_before_the_rate_limits() -> None:
    """One rule (``ModelInfo.completion_budget``) for the reservation: a max_tokens that cannot
    fit is the 400, even when its estimate is far beyond the deployment's budget."""
    with pytest.raises(ContextLengthExceeded):
        run(FakeEngine(context_length=4096), {"messages": [USER], "max_tokens": 200_000_000}, 1)
    # One that fits the context but not the budget (1,000 tokens a minute) is the 429.
    with pytest.raises(RateLimited) as caught:
        run(FakeEngine(context_length=4096), {"messages": [USER], "max_tokens": 2000}, 1)
    assert caught.value.headers["x-should-retry"] == "false"


def test_the_reservation_is_the_budget_the_engine_uses() -> None:
    """Without max_tokens the estimate reserves the model's default (16 for the fake), which is
    also where the engine stops."""
    engine = FakeEngine(lambda _r: ["a"] * 40, context_length=512)
    body = run(engine, {"messages": [USER]})
    assert body["usage"]["completion_tokens"] == 16
    assert body["choices"][0]["finish_reason"] == "length"


# -- the encoded text events ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2023-05-15", "2024-10-21"])
@pytest.mark.parametrize("include_usage", [False, True])
def test_a_text_event_is_the_bytes_the_whole_chunk_encodes_to(
    version: str, include_usage: bool
) -> None:
    from cerulean.protocol.sse import encode_event
    from cerulean.services.answers import with_usage
    from cerulean.services.chat import ChatContext, _chunk, _TextEvents

    ctx = ChatContext(model="gemma", api_version=parse_api_version(version), fingerprint="fp_1")
    texts = _TextEvents(ctx, include_usage)
    for text in [" word", 'quote " and \\ slash', "new\nline", "ünï © 😀", "\x00text\x00", "</s>"]:
        for index in (0, 3):
            whole = with_usage(_chunk(ctx, {"content": text}, index=index), include_usage)
            assert texts.encoded(text, index) == encode_event(whole)


def test_only_plain_text_takes_the_encoded_path() -> None:
    from cerulean.engines.base import EngineChunk
    from cerulean.services.chat import ChatContext, _TextEvents

    ctx = ChatContext(model="m", api_version=parse_api_version("2024-10-21"))
    texts = _TextEvents(ctx, False)
    assert texts.fits(EngineChunk(text="a"))
    assert not texts.fits(EngineChunk(text=""))
    assert not texts.fits(EngineChunk(text="a", finish_reason="stop"))
    assert not texts.fits(EngineChunk(text="a", filter_results={}))
    with_logprobs = ChatContext(model="m", api_version=ctx.api_version, logprobs=True)
    assert not _TextEvents(with_logprobs, False).fits(EngineChunk(text="a"))


@pytest.mark.parametrize("include_usage", [False, True])
def test_with_the_first_chunk_in_hand_the_opening_goes_out_with_it(include_usage: bool) -> None:
    """A remote answer's first chunk is read before the stream starts: the prompt-filter and
    role chunks then go out in the same write as the first text, and the stream's bytes are
    those of one event a write."""
    from cerulean.protocol.sse import encode_event
    from cerulean.services.answers import Meter
    from cerulean.services.chat import ChatContext, _events

    async def writes(in_hand: bool) -> list[bytes]:
        engine = FakeEngine(name="m", handler=lambda _r: ["Hello", " there", "."])
        engine.load()
        generation = await engine.generate(GenerationRequest(messages=(ChatMessage("user", "hi"),)))
        generation.first_chunk_in_hand = in_hand
        ctx = ChatContext(
            model="m", api_version=parse_api_version("2024-10-21"), id="chatcmpl-1", created=1
        )
        out = []
        async for event in _events(ctx, generation, Meter(), include_usage=include_usage, n=1):
            out.append(event if isinstance(event, bytes) else encode_event(event))
        return out

    apart, together = asyncio.run(writes(False)), asyncio.run(writes(True))
    assert b"".join(together) == b"".join(apart)
    assert b"prompt_filter_results" in apart[0] and b'"role":"assistant"' in apart[1]
    assert together[0] == apart[0] + apart[1] + apart[2]  # the opening and "Hello"
    assert together[1:] == apart[3:]
