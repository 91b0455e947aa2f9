"""The Responses API over HTTP, in-process with the fake engine (docs/responses.md).

Every body and stream event is validated against OpenAI's ``Response`` /
``ResponseStreamEvent`` schemas when each test ends (tests/conftest.py).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cerulean.app import create_app
from cerulean.engines.base import GenerationRequest, ToolCallDelta
from cerulean.engines.fake import FakeEngine, Piece
from cerulean.services.responses import run_response_request
from cerulean.settings import Settings
from cerulean.state import AppState
from cerulean.store.base import DeploymentRecord
from tests.conformance.recorder import record_responses
from tests.conftest import KEY1

V1 = "/openai/v1/responses"
DATED = "/openai/responses"
PREVIEW = "?api-version=2025-03-01-preview"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _answer(request: GenerationRequest) -> list[Piece]:
    """Calls get_weather when it may and nothing answered it yet; else echoes the last text."""
    last = request.messages[-1]
    if request.tools is not None and request.tools.choice != "none" and last.role != "tool":
        head = ToolCallDelta(0, id="call_1", name="get_weather")
        return [head, ToolCallDelta(0, arguments='{"city":'), ToolCallDelta(0, arguments='"Oslo"}')]
    return ["You said: ", last.text]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(_answer, context_length=256)


@pytest.fixture
def api(settings: Settings, engine: FakeEngine) -> Iterator[TestClient]:
    app = create_app(settings, {"fake-model": engine})
    with TestClient(app, raise_server_exceptions=False) as client:
        record_responses(client)
        client.headers["api-key"] = KEY1
        yield client


def events(text: str) -> list[dict[str, Any]]:
    """The data of each ``event:``/``data:`` block."""
    out = []
    for block in text.strip().split("\n\n"):
        name, data = block.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        out.append(event)
    return out


def create(api: TestClient, **body: Any) -> dict[str, Any]:
    response = api.post(V1, json={"model": "gpt-4", **body})
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def test_create_on_both_routes_with_rate_limit_headers(api: TestClient) -> None:
    for url in (V1, DATED + PREVIEW, DATED + "?api-version=2025-04-01-preview"):
        response = api.post(url, json={"model": "gpt-4", "input": "hello there"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "response" and body["status"] == "completed"
        assert body["id"].startswith("resp_")
        assert body["output"][0]["content"][0]["text"] == "You said: hello there"
        assert body["usage"]["input_tokens"] == 3 and body["usage"]["output_tokens"] == 2
        assert response.headers["x-ms-deployment-name"] == "gpt-4"
        assert "x-ratelimit-remaining-tokens" in response.headers
        assert api.get(f"{V1}/{body['id']}").json() == body


def test_api_version_gating(api: TestClient) -> None:
    old = api.post(DATED + "?api-version=2024-10-21", json={"model": "gpt-4", "input": "x"})
    assert old.status_code == 400
    assert "enabled only for api-version 2025-03-01-preview and later" in old.text
    assert api.post(DATED, json={"model": "gpt-4", "input": "x"}).status_code == 404
    dated_on_v1 = api.post(V1 + PREVIEW, json={"model": "gpt-4", "input": "x"})
    assert dated_on_v1.status_code == 400
    assert api.get(f"{DATED}/resp_x?api-version=2024-10-21").status_code == 400


def test_request_errors_are_azure_shaped(api: TestClient) -> None:
    cases = [
        ({"input": "x"}, "'model' is a required property"),
        ({"model": "nope", "input": "x"}, "DeploymentNotFound"),
        ({"model": "gpt-4", "input": "x", "bogus": 1}, "Unrecognized request argument"),
        ({"model": "gpt-4", "input": "x", "max_output_tokens": 5}, "less than the minimum"),
        ({"model": "gpt-4"}, "Missing required parameter: 'input'"),
        ({"model": "gpt-4", "input": []}, "empty array"),
        ({"model": "gpt-4", "input": [{"type": "web_search_call"}]}, "Supported values"),
        ({"model": "gpt-4", "input": "x", "tools": [{"type": "web_search"}]}, "built-in tools"),
        ({"model": "gpt-4", "input": "x", "background": True, "store": False}, "requires"),
        ({"model": "gpt-4", "input": "x", "reasoning": {"effort": "high"}}, "Unsupported"),
    ]
    for body, expected in cases:
        response = api.post(V1, json=body)
        assert 400 <= response.status_code < 500, (body, response.text)
        assert expected in response.text, (body, response.text)
        assert "detail" not in response.json()


def test_previous_response_id_rebuilds_the_conversation(
    api: TestClient, engine: FakeEngine
) -> None:
    first = create(api, input="my name is Ada", instructions="be brief")
    second = create(api, input="what is my name?", previous_response_id=first["id"])
    third = create(api, input="and again?", previous_response_id=second["id"])
    seen = [(m.role, m.text) for m in engine.requests[-1].messages]
    assert seen == [
        ("user", "my name is Ada"),  # the earlier instructions are not carried over
        ("assistant", "You said: my name is Ada"),
        ("user", "what is my name?"),
        ("assistant", "You said: what is my name?"),
        ("user", "and again?"),
    ]
    tokens = [r["usage"]["input_tokens"] for r in (first, second, third)]
    assert tokens[0] < tokens[1] < tokens[2]
    assert third["previous_response_id"] == second["id"]


def test_function_call_round_trip(api: TestClient, engine: FakeEngine) -> None:
    asked = create(api, input="weather in Oslo?", tools=[WEATHER])
    call = asked["output"][0]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Oslo"}
    answer = {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
    done = create(api, input=[answer], tools=[WEATHER], previous_response_id=asked["id"])
    assert done["output"][0]["content"][0]["text"] == "You said: sunny"
    messages = engine.requests[-1].messages
    assert messages[1].role == "assistant" and messages[1].tool_calls[0].id == call["call_id"]
    assert messages[2].role == "tool" and messages[2].tool_call_id == call["call_id"]
    assert messages[2].name == "get_weather"
    assert engine.requests[-1].tools is not None


def test_item_input_and_json_schema(api: TestClient, engine: FakeEngine) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}
    body = create(
        api,
        input=[
            {"role": "developer", "content": "answer in JSON"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        ],
        text={"format": fmt},
    )
    assert body["text"]["format"]["name"] == "thing"
    wanted = engine.requests[-1]
    assert wanted.response_format is not None and wanted.response_format.kind == "json_schema"
    assert wanted.response_format.schema == schema
    assert [m.role for m in wanted.messages] == ["developer", "user"]
    missing = api.post(
        V1, json={"model": "gpt-4", "input": "x", "text": {"format": {"type": "json_schema"}}}
    )
    assert missing.status_code == 400 and "text.format.name" in missing.text


def test_stream_events_in_order(api: TestClient) -> None:
    response = api.post(V1, json={"model": "gpt-4", "input": "hi there", "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    got = events(response.text)
    kinds = [e["type"] for e in got]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    final = got[-1]["response"]
    assert api.get(f"{V1}/{final['id']}").json() == final


def test_function_call_stream_events(api: TestClient) -> None:
    response = api.post(
        V1, json={"model": "gpt-4", "input": "w?", "tools": [WEATHER], "stream": True}
    )
    kinds = [e["type"] for e in events(response.text)]
    assert kinds.count("response.function_call_arguments.delta") == 2
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]


def test_max_output_tokens_makes_it_incomplete(settings: Settings) -> None:
    engine = FakeEngine(lambda _r: ["word "] * 40, context_length=256)
    with TestClient(create_app(settings, {"fake-model": engine})) as api:
        record_responses(api)
        api.headers["api-key"] = KEY1
        body = create(api, input="talk", max_output_tokens=16)
        assert body["status"] == "incomplete"
        assert body["incomplete_details"] == {"reason": "max_output_tokens"}
        assert body["usage"]["output_tokens"] == 16


def test_store_false_delete_and_unknown_ids(api: TestClient) -> None:
    unstored = create(api, input="x", store=False)
    assert api.get(f"{V1}/{unstored['id']}").status_code == 404
    stored = create(api, input="x")
    assert api.delete(f"{V1}/{stored['id']}").json() == {
        "id": stored["id"],
        "object": "response",
        "deleted": True,
    }
    for method in ("get", "delete"):
        gone = getattr(api, method)(f"{V1}/{stored['id']}")
        assert gone.status_code == 404
        assert gone.json()["error"]["message"] == f"Response with id '{stored['id']}' not found."
    assert api.get(f"{V1}/resp_unknown/input_items").status_code == 404
    assert api.post(f"{V1}/resp_unknown/cancel").status_code == 404
    chained = api.post(
        V1, json={"model": "gpt-4", "input": "y", "previous_response_id": stored["id"]}
    )
    assert chained.status_code == 400
    assert chained.json()["error"]["code"] == "previous_response_not_found"


def test_a_chain_stays_on_its_deployment(api: TestClient) -> None:
    first = create(api, input="x")
    other = api.post(
        V1, json={"model": "gpt-35-turbo", "input": "y", "previous_response_id": first["id"]}
    )
    assert other.status_code == 400
    assert other.json()["error"]["param"] == "previous_response_id"
    assert "deployment 'gpt-4'" in other.json()["error"]["message"]


def test_input_items_pagination(api: TestClient) -> None:
    items = [{"role": "user", "content": f"part {i}"} for i in range(5)]
    body = create(api, input=items)
    url = f"{V1}/{body['id']}/input_items"
    newest = api.get(url).json()
    assert [i["content"][0]["text"] for i in newest["data"]] == [
        f"part {i}" for i in range(4, -1, -1)
    ]
    first = api.get(url, params={"limit": 2, "order": "asc"}).json()
    assert [i["content"][0]["text"] for i in first["data"]] == ["part 0", "part 1"]
    assert first["has_more"] is True
    rest = api.get(url, params={"limit": 2, "order": "asc", "after": first["last_id"]}).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["part 2", "part 3"]
    before = api.get(url, params={"order": "asc", "before": rest["first_id"]}).json()
    assert [i["content"][0]["text"] for i in before["data"]] == ["part 0", "part 1"]
    assert api.get(url, params={"limit": 0}).status_code == 400
    assert api.get(url, params={"limit": "x"}).status_code == 400
    assert api.get(url, params={"order": "up"}).status_code == 400


def test_truncation_auto_drops_the_oldest_turns(settings: Settings) -> None:
    engine = FakeEngine(_answer, context_length=40)
    with TestClient(create_app(settings, {"fake-model": engine})) as api:
        record_responses(api)
        api.headers["api-key"] = KEY1
        long = [{"role": "user", "content": "many words " * 8} for _ in range(3)]
        long.append({"role": "user", "content": "last"})
        refused = api.post(V1, json={"model": "gpt-4", "input": long, "max_output_tokens": 16})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "context_length_exceeded"
        body = create(api, input=long, max_output_tokens=16, truncation="auto")
        assert body["truncation"] == "auto"
        assert engine.requests[-1].messages[-1].text == "last"
        assert len(engine.requests[-1].messages) < len(long)


def _wait(api: TestClient, response_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        body: dict[str, Any] = api.get(f"{V1}/{response_id}").json()
        if body["status"] == status or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def test_background_resume_and_idempotent_cancel(api: TestClient) -> None:
    queued = create(api, input="in the back", background=True)
    assert queued["status"] == "queued" and queued["background"] is True
    done = _wait(api, queued["id"], "completed")
    assert done["status"] == "completed"
    resumed = events(
        api.get(f"{V1}/{queued['id']}", params={"stream": "true", "starting_after": 3}).text
    )
    assert resumed[0]["sequence_number"] == 4
    assert resumed[-1]["type"] == "response.completed"
    full = events(api.get(f"{V1}/{queued['id']}?stream=true").text)
    assert [e["sequence_number"] for e in full] == list(range(len(full)))
    assert api.post(f"{V1}/{queued['id']}/cancel").json()["status"] == "completed"
    plain = create(api, input="x")
    assert api.post(f"{V1}/{plain['id']}/cancel").status_code == 400
    assert api.get(f"{V1}/{plain['id']}?stream=true").status_code == 400


def test_background_cancel_stops_the_run(settings: Settings) -> None:
    engine = FakeEngine(lambda _r: ["slow "] * 14, context_length=256, delay=0.2)
    with TestClient(create_app(settings, {"fake-model": engine})) as api:
        record_responses(api)
        api.headers["api-key"] = KEY1
        queued = create(api, input="go", background=True)
        _wait(api, queued["id"], "in_progress")
        cancelled = api.post(f"{V1}/{queued['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
        assert api.get(f"{V1}/{queued['id']}").json()["status"] == "cancelled"
        assert api.post(f"{V1}/{queued['id']}/cancel").json()["status"] == "cancelled"
        assert all(g.closed for g in engine.generations)


def test_background_stream_follows_the_run(api: TestClient) -> None:
    response = api.post(
        V1, json={"model": "gpt-4", "input": "x", "background": True, "stream": True}
    )
    got = events(response.text)
    assert got[0]["response"]["status"] == "queued"
    assert got[-1]["type"] == "response.completed"


def test_run_response_request_for_other_services(api: TestClient) -> None:
    state = api.app.state.cerulean  # type: ignore[attr-defined]

    def run(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        call = functools.partial(run_response_request, state, body, request_id="batch-1")
        result: tuple[int, dict[str, Any]] = api.portal.call(call)  # type: ignore[union-attr]
        return result

    status, body = run({"model": "gpt-4", "input": "a batch line"})
    assert status == 200 and body["output"][0]["content"][0]["text"] == "You said: a batch line"
    assert api.get(f"{V1}/{body['id']}").json() == body
    assert run({"model": "nope", "input": "x"})[0] == 404
    status, error = run({"model": "gpt-4", "input": "x", "stream": True})
    assert status == 400 and error["error"]["param"] == "stream"
    assert run({"input": "x"}) == (400, run({"input": "y"})[1])


def test_rate_limits_are_chats(api: TestClient) -> None:
    state: AppState = api.app.state.cerulean  # type: ignore[attr-defined]
    created = datetime.now(timezone.utc)
    state.store.put_deployment(DeploymentRecord("small", "fake-model", "1", 1, "Standard", created))
    first = api.post(V1, json={"model": "small", "input": "hello there", "max_output_tokens": 16})
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == 1000 - (3 + 16)
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    again = api.post(V1, json={"model": "small", "input": "x"})
    assert again.status_code == 429 and "retry-after" in again.headers
    chat = "/openai/deployments/small/chat/completions?api-version=2024-10-21"
    assert api.post(chat, json={"messages": [{"role": "user", "content": "x"}]}).status_code == 429


def test_resume_a_running_background_stream(settings: Settings) -> None:
    engine = FakeEngine(lambda _r: ["tick "] * 8, context_length=256, delay=0.05)
    with TestClient(create_app(settings, {"fake-model": engine})) as api:
        record_responses(api)
        api.headers["api-key"] = KEY1
        queued = create(api, input="go", background=True)
        _wait(api, queued["id"], "in_progress")
        live = api.get(f"{V1}/{queued['id']}", params={"stream": "true", "starting_after": 1})
        got = events(live.text)
        assert [e["sequence_number"] for e in got] == list(range(2, 2 + len(got)))
        assert got[-1]["type"] == "response.completed"
        assert got[-1]["response"]["output"][0]["content"][0]["text"] == "tick " * 8
