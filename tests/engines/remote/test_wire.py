"""The upstream request bodies per flavor and the reading of upstream streams (no network)."""

from __future__ import annotations

import json

import pytest

from cerulean.engines.base import (
    ChatMessage,
    FunctionSpec,
    GenerationRequest,
    ResponseFormat,
    SamplingParams,
    ToolCall,
    Tools,
)
from cerulean.engines.remote import wire
from cerulean.engines.remote.flavors import FLAVORS, flavor

ASK = (ChatMessage("user", "hi"),)


def test_every_chat_body_streams_with_usage_and_names_the_model() -> None:
    body = wire.chat_body(GenerationRequest(ASK), flavor("vllm"), "m")
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "m" and body["messages"] == [{"role": "user", "content": "hi"}]
    azure = wire.chat_body(GenerationRequest(ASK), flavor("azure"), "gpt-4o")
    assert "model" not in azure  # the deployment is in the URL


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("vllm", "structured_outputs", {"grammar": 'root ::= "x"'}),
        ("llama-server", "grammar", 'root ::= "x"'),
        ("sglang", "ebnf", 'root ::= "x"'),
    ],
)
def test_grammars_take_each_engines_own_field(name: str, field: str, value: object) -> None:
    request = GenerationRequest(ASK, SamplingParams(grammar='root ::= "x"'))
    assert wire.chat_body(request, flavor(name), "m")[field] == value
    assert "guided_grammar" not in wire.chat_body(request, flavor(name), "m")


def test_features_name_the_parameter_that_needs_them() -> None:
    request = GenerationRequest(
        ASK,
        SamplingParams(logprobs=2, seed=1, logit_bias=((5, 1.0),)),
        n=2,
        tools=Tools((FunctionSpec("f"),), "auto"),
        response_format=ResponseFormat("json_object"),
    )
    needed = wire.features(request)
    assert needed == {
        "tools": "tools",
        "json_object": "response_format",
        "logprobs": "logprobs",
        "n": "n",
        "seed": "seed",
        "logit_bias": "logit_bias",
    }
    assert not set(needed) <= FLAVORS["ollama"].supports


def test_tools_and_history_go_out_as_openai_defines_them() -> None:
    history = (
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", None, tool_calls=(ToolCall("call_1", "f", '{"a": 1}'),)),
        ChatMessage("tool", "sunny", tool_call_id="call_1"),
    )
    tools = Tools(
        (FunctionSpec("f", "does f", {"type": "object"}, strict=True),),
        "function",
        "f",
        parallel=False,
    )
    body = wire.chat_body(GenerationRequest(history, tools=tools), flavor("openai"), "m")
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["tools"][0]["function"] == {
        "name": "f",
        "description": "does f",
        "parameters": {"type": "object"},
        "strict": True,
    }
    assert body["messages"][1]["tool_calls"][0] == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"a": 1}'},
    }
    assert body["messages"][2]["tool_call_id"] == "call_1"
    legacy = Tools((FunctionSpec("f"),), "auto", parallel=False, legacy=True)
    old = wire.chat_body(GenerationRequest(ASK, tools=legacy), flavor("azure"), "d")
    assert old["function_call"] == "auto" and old["functions"][0]["name"] == "f"


def test_json_schema_keeps_its_name_and_strict() -> None:
    fmt = ResponseFormat("json_schema", {"type": "object"}, name="answer", strict=True)
    body = wire.chat_body(GenerationRequest(ASK, response_format=fmt), flavor("vllm"), "m")
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }


def test_completions_bodies() -> None:
    request = GenerationRequest((), SamplingParams(logprobs=1), prompt=(1, 2, 3), echo=True, n=2)
    body = wire.completion_body(request, flavor("vllm"), "m")
    assert body["prompt"] == [1, 2, 3] and body["echo"] is True and body["logprobs"] == 1
    assert body["n"] == 2


def _event(**fields: object) -> str:
    return json.dumps({"id": "x", "object": "chat.completion.chunk", **fields})


def test_a_stream_becomes_chunks_with_the_usage_on_the_last_final() -> None:
    reader = wire.StreamReader(prompt_estimate=9)
    chunks = []
    for payload in (
        _event(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}}]),
        _event(
            choices=[
                {"index": 0, "delta": {"content": "Hel"}},
                {"index": 1, "delta": {"content": "Yo"}},
            ]
        ),
        _event(choices=[{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]),
        _event(choices=[{"index": 1, "delta": {}, "finish_reason": "length"}]),
        _event(choices=[], usage={"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}),
        "[DONE]",
    ):
        chunks += reader.feed(payload)
    assert "".join(c.text for c in chunks if c.index == 0) == "Hello"
    finals = reader.close()
    assert [(f.index, f.finish_reason) for f in finals] == [(0, "stop"), (1, "length")]
    assert [f.completion_tokens for f in finals] == [0, 3] and finals[0].prompt_tokens == 4


def test_tool_call_deltas_and_azure_frames() -> None:
    reader = wire.StreamReader(prompt_estimate=1)
    frame = {
        "choices": [],
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    }
    assert reader.feed(json.dumps(frame)) == []
    assert reader.prompt_filter_results == frame["prompt_filter_results"]
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    (chunk,) = reader.feed(_event(choices=[{"index": 0, "delta": {"tool_calls": [call]}}]))
    assert chunk.tool_calls[0].name == "f" and chunk.tool_calls[0].id == "call_1"
    reader.feed(_event(choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]))
    (final,) = reader.close()
    assert final.finish_reason == "tool_calls"
    assert final.prompt_tokens == 1  # no usage chunk came: the estimate


@pytest.mark.parametrize("payload", ["{oops", "[1]", json.dumps({"error": {"message": "boom"}})])
def test_bad_events_raise(payload: str) -> None:
    with pytest.raises(wire.UpstreamStreamError):
        wire.StreamReader(prompt_estimate=1).feed(payload)
