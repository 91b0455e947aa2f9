"""Function calling over HTTP: the service's translation and the shapes Azure answers in.

The fake engine answers with tool-call deltas (as every engine gives them); how the llama.cpp
engine produces those from a local model is tested in ``tests/engines/llamacpp/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.base import GenerationRequest, ToolCall, ToolCallDelta
from cerulean.engines.fake import FakeEngine, Piece
from cerulean.settings import Settings
from tests.api.test_chat import sse_events
from tests.conftest import KEY1

URL = "/openai/deployments/gpt-35-turbo/chat/completions?api-version=2024-10-21"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ASK = [{"role": "user", "content": "weather in Oslo?"}]
seen: list[GenerationRequest] = []


def _call(index: int, call_id: str, *arguments: str) -> list[Piece]:
    head = ToolCallDelta(index, id=call_id, name="get_weather")
    return [head, *(ToolCallDelta(index, arguments=piece) for piece in arguments)]


def _answer(request: GenerationRequest) -> list[Piece]:
    seen.append(request)
    last = request.messages[-1].text
    if request.tools is None or "text please" in last:
        return ["It ", "is ", "sunny."]
    if "cut" in last:
        return _call(0, "call_cut", '{"ci', 'ty": "Os')
    if "two" in last:
        return [*_call(0, "call_a", '{"city": "Oslo"}'), *_call(1, "call_b", '{"city": "Rome"}')]
    return _call(0, "call_one", '{"ci', 'ty": ', '"Oslo"}')


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    seen.clear()
    engine = FakeEngine(_answer, context_length=4096)
    with TestClient(create_app(settings, {"fake-model": engine})) as test_client:
        test_client.headers["api-key"] = KEY1
        yield test_client


def test_tool_call_answer(client: TestClient) -> None:
    body = client.post(URL, json={"messages": ASK, "tools": [WEATHER]}).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and message["role"] == "assistant"
    (call,) = message["tool_calls"]
    assert call == {
        "id": "call_one",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    assert choice["content_filter_results"] == {}


def test_the_engine_gets_the_tools_as_azure_defines_them(client: TestClient) -> None:
    client.post(URL, json={"messages": ASK, "tools": [WEATHER], "tool_choice": "required"})
    tools = seen[-1].tools
    assert tools is not None and tools.choice == "required" and tools.parallel
    (function,) = tools.functions
    assert (
        function.name == "get_weather" and function.parameters == WEATHER["function"]["parameters"]
    )  # type: ignore[index]
    assert seen[-1].messages[0].role == "user"  # nothing described in the prompt by the service
    client.post(URL, json={"messages": ASK, "tools": [WEATHER], "parallel_tool_calls": False})
    assert seen[-1].tools is not None and not seen[-1].tools.parallel


def test_text_answer_with_tools(client: TestClient) -> None:
    ask = [{"role": "user", "content": "text please"}]
    body = client.post(URL, json={"messages": ask, "tools": [WEATHER]}).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": "It is sunny.", "refusal": None}


def test_parallel_calls(client: TestClient) -> None:
    ask = [{"role": "user", "content": "two"}]
    body = client.post(URL, json={"messages": ask, "tools": [WEATHER]}).json()
    calls = body["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_weather"]
    assert [c["id"] for c in calls] == ["call_a", "call_b"]
    assert [json.loads(c["function"]["arguments"])["city"] for c in calls] == ["Oslo", "Rome"]


def test_cut_off_call_keeps_its_partial_arguments(client: TestClient) -> None:
    """A call cut by max_tokens: finish_reason "length", the call with the arguments so far,
    content null — never the call's text as content (docs/compatibility.md)."""
    ask = [{"role": "user", "content": "cut"}]
    body = client.post(URL, json={"messages": ask, "tools": [WEATHER], "max_tokens": 2}).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"ci'}


def test_legacy_function_call(client: TestClient) -> None:
    body = client.post(
        URL.replace("2024-10-21", "2023-07-01-preview"),
        json={"messages": ASK, "functions": [WEATHER["function"]]},
    ).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "function_call"
    message = choice["message"]
    assert message["content"] is None and "tool_calls" not in message
    assert message["function_call"]["name"] == "get_weather"
    assert json.loads(message["function_call"]["arguments"]) == {"city": "Oslo"}
    assert seen[-1].tools is not None and seen[-1].tools.legacy


def _chunks(client: TestClient, body: dict[str, object]) -> list[dict[str, object]]:
    response = client.post(URL, json={**body, "stream": True})
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[1:-1]]


def _deltas(chunks: list[dict[str, object]]) -> list[dict[str, object]]:
    return [c["choices"][0]["delta"] for c in chunks]  # type: ignore[index]


def test_streamed_tool_call(client: TestClient) -> None:
    chunks = _chunks(client, {"messages": ASK, "tools": [WEATHER]})
    deltas = _deltas(chunks)
    first = deltas[0]
    assert first["role"] == "assistant" and first["content"] is None
    (head,) = first["tool_calls"]  # type: ignore[misc]
    assert head["index"] == 0 and head["id"].startswith("call_") and head["type"] == "function"
    assert head["function"] == {"name": "get_weather", "arguments": ""}
    pieces = [
        d["tool_calls"][0]["function"]["arguments"]  # type: ignore[index]
        for d in deltas[1:]
        if "tool_calls" in d
    ]
    assert pieces == ['{"ci', 'ty": ', '"Oslo"}']  # streamed as the engine gives them
    assert all(d["tool_calls"][0].keys() == {"index", "function"} for d in deltas[1:-1])  # type: ignore[index]
    assert deltas[-1] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]


def test_streamed_text_with_tools(client: TestClient) -> None:
    ask = [{"role": "user", "content": "text please"}]
    deltas = _deltas(_chunks(client, {"messages": ask, "tools": [WEATHER]}))
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(str(d.get("content", "")) for d in deltas) == "It is sunny."


def test_streamed_function_call(client: TestClient) -> None:
    body = {"messages": ASK, "functions": [WEATHER["function"]]}
    chunks = _chunks(client, body)
    deltas = _deltas(chunks)
    assert deltas[0] == {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "get_weather", "arguments": ""},
    }
    arguments = "".join(d["function_call"]["arguments"] for d in deltas[1:-1])  # type: ignore[index]
    assert json.loads(arguments) == {"city": "Oslo"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"  # type: ignore[index]


def test_history_with_calls_and_tool_results(client: TestClient) -> None:
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
        {"role": "user", "content": "text please"},
    ]
    response = client.post(URL, json={"messages": history, "tools": [WEATHER]})
    assert response.status_code == 200, response.text
    messages = seen[-1].messages
    assert messages[1].role == "assistant" and messages[1].content is None
    assert messages[1].tool_calls == (ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),)
    assert messages[2].role == "tool" and messages[2].tool_call_id == "call_1"
    assert messages[2].content == "sunny, 21 C"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "tool", "content": "x"}], "messages.0"),
        ([{"role": "user"}], "messages.0"),
        ([{"role": "function", "content": "x"}], "messages.0"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages.0.content",
        ),
    ],
)
def test_bad_messages(client: TestClient, messages: list[object], param: str) -> None:
    response = client.post(URL, json={"messages": messages})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_content_parts_and_developer_role(client: TestClient) -> None:
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "text"}, {"type": "text", "text": "please"}],
        },
    ]
    url = URL.replace("2024-10-21", "2024-12-01-preview")
    response = client.post(url, json={"messages": messages})
    assert response.status_code == 200, response.text
    assert seen[-1].messages[0].role == "developer"
    assert seen[-1].messages[1].text == "text\nplease"
