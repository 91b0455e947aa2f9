"""The Responses API on a real server with the real model, driven by openai 1.x: both the
``AzureOpenAI`` client (api-version 2025-03-01-preview, ``/openai/responses``) and the plain
``OpenAI`` client on ``/openai/v1/``. Every body and event is validated against OpenAI's
``Response`` and ``ResponseStreamEvent`` schemas (tests/conftest.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
import pytest
from openai import AzureOpenAI, OpenAI

from tests.conformance.recorder import recording_client
from tests.e2e.conftest import Server

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def azure(server: Server) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=server.endpoint,
        api_key=server.key1,
        api_version="2025-03-01-preview",
        max_retries=0,
        http_client=recording_client(),
    )


def v1(server: Server) -> OpenAI:
    return OpenAI(
        base_url=f"{server.endpoint}openai/v1/",
        api_key=server.key1,
        max_retries=0,
        http_client=recording_client(),
    )


@pytest.fixture(params=["azure", "v1"])
def client(request: pytest.FixtureRequest, server: Server) -> AzureOpenAI | OpenAI:
    return azure(server) if request.param == "azure" else v1(server)


def test_create_retrieve_input_items_delete(client: OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="gpt-4",
        input=[
            {"role": "user", "content": "Say hello."},
            {"role": "user", "content": "Then say goodbye."},
        ],
        instructions="You are a helpful assistant.",
        temperature=0,
        max_output_tokens=16,
        metadata={"test": "e2e"},
    )
    response = raw.parse()
    assert raw.headers["x-ms-deployment-name"] == "gpt-4"
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) >= 0
    assert response.status in ("completed", "incomplete")
    assert response.output_text.strip()
    assert response.usage is not None and response.usage.output_tokens <= 16
    assert response.metadata == {"test": "e2e"}
    again = client.responses.retrieve(response.id)
    assert again.output_text == response.output_text and again.id == response.id
    items = client.responses.input_items.list(response.id, order="asc", limit=1)
    assert len(items.data) == 1 and items.has_more
    texts = [item.content[0].text for item in items]  # type: ignore[union-attr]  # auto-pages
    assert texts == ["Say hello.", "Then say goodbye."]
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_stream_helper_and_raw_events(client: OpenAI) -> None:
    with client.responses.stream(
        model="gpt-4", input="Count to five.", temperature=0, max_output_tokens=48
    ) as stream:
        seen = list(stream)
        final = seen[-1].response  # type: ignore[union-attr]
        if final.status == "completed":  # the helper insists on response.completed
            assert stream.get_final_response().output_text == final.output_text
    deltas = [e for e in seen if e.type == "response.output_text.delta"]
    assert deltas and deltas[-1].snapshot == final.output_text  # the helper's accumulation
    assert "".join(e.delta for e in deltas) == final.output_text
    events = list(
        client.responses.create(
            model="gpt-4", input="Say hi.", temperature=0, max_output_tokens=16, stream=True
        )
    )
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers)) and numbers[0] == 0
    assert events[0].type == "response.created" and events[1].type == "response.in_progress"
    assert events[-1].type in ("response.completed", "response.incomplete")
    stored = client.responses.retrieve(events[-1].response.id)  # type: ignore[union-attr]
    assert stored.output_text == events[-1].response.output_text  # type: ignore[union-attr]


def test_three_turn_chain_includes_earlier_turns(server: Server) -> None:
    client = v1(server)
    turns = [
        "My name is Ada. Remember my name.",
        "I live in Oslo.",
        "What is my name? Answer with my name only.",
    ]
    previous = None
    responses = []
    for text in turns:
        response = client.responses.create(
            model="gpt-4",
            input=text,
            previous_response_id=previous,
            temperature=0,
            max_output_tokens=16,
        )
        responses.append(response)
        previous = response.id
    tokens = [r.usage.input_tokens for r in responses if r.usage is not None]
    # Each turn reads the earlier ones: more than its own words plus the earlier answers.
    for earlier, later, r in zip(tokens, tokens[1:], responses, strict=False):
        assert later > earlier + (r.usage.output_tokens if r.usage else 0)
    assert "ada" in responses[-1].output_text.lower()


def test_function_call_round_trip(client: OpenAI) -> None:
    asked = client.responses.create(
        model="gpt-4",
        input="What is the weather in Oslo?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        temperature=0,
    )
    calls = [item for item in asked.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert set(json.loads(calls[0].arguments)) == {"city"}
    output = {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny, 21 C"}
    follow_up = {
        "tools": [WEATHER],
        "tool_choice": "none",
        "temperature": 0,
        "max_output_tokens": 24,
    }
    answered = client.responses.create(
        model="gpt-4",
        previous_response_id=asked.id,
        input=[output],  # type: ignore[list-item]
        **follow_up,  # type: ignore[arg-type]
    )
    assert answered.output[0].type == "message" and answered.output_text.strip()
    # The server rebuilt the whole conversation: the same prompt as sending it all explicitly.
    call = {k: getattr(calls[0], k) for k in ("type", "call_id", "name", "arguments")}
    explicit = client.responses.create(
        model="gpt-4",
        input=[{"role": "user", "content": "What is the weather in Oslo?"}, call, output],  # type: ignore[list-item]
        **follow_up,  # type: ignore[arg-type]
    )
    assert answered.usage is not None and explicit.usage is not None
    assert answered.usage.input_tokens == explicit.usage.input_tokens
    assert answered.output_text == explicit.output_text  # greedy: the same answer


def test_json_schema_output_parses(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model="gpt-4",
        input="Invent a person.",
        text={
            "format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}
        },
        temperature=0,
        max_output_tokens=64,
    )
    person = json.loads(response.output_text)
    assert set(person) == {"name", "age"} and isinstance(person["age"], int)


def test_background_and_cancel(client: OpenAI) -> None:
    started = client.responses.create(
        model="gpt-4",
        input="Write a long story about the sea.",
        background=True,
        max_output_tokens=400,
    )
    assert started.status in ("queued", "in_progress") and started.background
    cancelled = client.responses.cancel(started.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(started.id).status == cancelled.status
    done = client.responses.create(
        model="gpt-4", input="Say hi.", background=True, max_output_tokens=16, temperature=0
    )
    deadline = time.monotonic() + 120
    while done.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.2)
        done = client.responses.retrieve(done.id)
    assert done.status in ("completed", "incomplete")
    resumed = list(client.responses.retrieve(done.id, stream=True, starting_after=2))
    assert resumed[0].sequence_number == 3
    assert resumed[-1].type in ("response.completed", "response.incomplete")


def test_old_api_version_is_refused(server: Server) -> None:
    old = AzureOpenAI(
        azure_endpoint=server.endpoint,
        api_key=server.key1,
        api_version="2024-10-21",
        max_retries=0,
        http_client=recording_client(),
    )
    with pytest.raises(openai.BadRequestError, match="2025-03-01-preview and later"):
        old.responses.create(model="gpt-4", input="hi")


def test_kill_9_keeps_stored_responses_and_fails_the_interrupted_run(tmp_path: Path) -> None:
    env = {"CERULEAN_RESPONSE_HEARTBEAT": "0.5"}  # a silent run is dead after 1.5 s
    first = Server(home=tmp_path / "home", env=env).start()
    client = v1(first)
    kept = client.responses.create(model="gpt-4", input="Say hi.", max_output_tokens=16)
    running = client.responses.create(
        model="gpt-4", input="Write a long story.", background=True, max_output_tokens=400
    )
    deadline = time.monotonic() + 60
    while client.responses.retrieve(running.id).status == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.stop(kill=True)
    second = Server(home=tmp_path / "home", env=env).start()
    try:
        client = v1(second)
        assert client.responses.retrieve(kept.id).output_text == kept.output_text
        time.sleep(1.5)
        interrupted = client.responses.retrieve(running.id)
        assert interrupted.status == "failed"
        assert interrupted.error is not None and interrupted.error.code == "server_error"
        follow = client.responses.create(
            model="gpt-4", input="Again.", previous_response_id=kept.id, max_output_tokens=16
        )
        assert follow.usage is not None and kept.usage is not None
        assert follow.usage.input_tokens > kept.usage.input_tokens
    finally:
        second.stop()
