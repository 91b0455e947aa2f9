"""Real server, real model, real SDKs: function calling, structured parse, v1 and listings."""

from __future__ import annotations

import json

import openai
import pytest
from openai import AzureOpenAI, OpenAI
from pydantic import BaseModel

from tests.e2e.conftest import Server, run_program

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Oslo?"}]


def sdk(server: Server, version: str = "2024-10-21") -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=server.endpoint, api_key=server.key1, api_version=version, max_retries=0
    )


def _check_args(arguments: str) -> dict[str, str]:
    args = json.loads(arguments)
    assert set(args) == {"city", "unit"} and args["unit"] in ("celsius", "fahrenheit")
    assert isinstance(args["city"], str) and len(args["city"]) <= 20
    return args  # type: ignore[no-any-return]


def test_tools_round_trip(server: Server) -> None:
    client = sdk(server)
    first = client.chat.completions.create(
        model="gpt-4",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=60,
        temperature=0,
    )  # type: ignore[call-overload]
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert 1 <= len(calls) <= 4
    assert calls[0].function.name == "get_weather" and calls[0].id.startswith("call_")
    _check_args(calls[0].function.arguments)
    history = [
        *ASK,
        choice.message.model_dump(exclude_none=True),
        *(
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees."}
            for call in calls
        ),
    ]
    second = client.chat.completions.create(
        model="gpt-4", messages=history, tools=[WEATHER], tool_choice="none", max_tokens=20
    )  # type: ignore[call-overload]
    assert second.choices[0].finish_reason in ("stop", "length")
    assert second.choices[0].message.tool_calls is None


def test_named_tool_streamed(server: Server) -> None:
    stream = sdk(server).chat.completions.create(
        model="gpt-35-turbo",
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
        stream=True,
    )  # type: ignore[call-overload]
    chunks = [c for c in stream if c.choices]
    head = chunks[0].choices[0].delta
    assert head.role == "assistant" and head.tool_calls is not None
    assert head.tool_calls[0].function is not None
    assert head.tool_calls[0].function.name == "get_weather"
    arguments = "".join(
        (d.function.arguments or "")
        for c in chunks
        for d in (c.choices[0].delta.tool_calls or [])
        if d.function is not None
    )
    _check_args(arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_auto_answers_either_way(server: Server) -> None:
    body = sdk(server).chat.completions.create(
        model="gpt-4", messages=ASK, tools=[WEATHER], max_tokens=40, n=3, seed=1
    )  # type: ignore[call-overload]
    for choice in body.choices:
        if choice.finish_reason == "tool_calls":
            for call in choice.message.tool_calls or []:
                _check_args(call.function.arguments)
        else:
            assert choice.message.content is not None
            assert not choice.message.content.lstrip().startswith(("{", "["))


def test_legacy_functions(server: Server) -> None:
    body = sdk(server, "2023-07-01-preview").chat.completions.create(
        model="gpt-4",
        messages=ASK,
        functions=[WEATHER["function"]],
        function_call={"name": "get_weather"},
        max_tokens=60,
    )  # type: ignore[call-overload]
    choice = body.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.function_call is not None
    _check_args(choice.message.function_call.arguments)


class Verdict(BaseModel):
    answer: bool
    confidence: int


def test_beta_parse_with_a_pydantic_model(server: Server) -> None:
    completion = sdk(server).beta.chat.completions.parse(
        model="gpt-4",
        messages=[{"role": "user", "content": "Is the sea salty? Reply in JSON."}],
        response_format=Verdict,
        max_tokens=40,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Verdict)


def test_unrecognized_argument_through_the_sdk(server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(server, "2023-05-15").chat.completions.create(
            model="gpt-4", messages=ASK, seed=1, max_tokens=2
        )  # type: ignore[call-overload]
    assert caught.value.message.endswith("Unrecognized request argument supplied: seed'}}") or (
        "Unrecognized request argument supplied: seed" in str(caught.value)
    )


def test_v1_route_with_the_plain_openai_client(server: Server) -> None:
    client = OpenAI(base_url=f"{server.endpoint}openai/v1/", api_key=server.key1, max_retries=0)
    body = client.chat.completions.create(model="gpt-4", messages=ASK, max_tokens=4)
    assert body.choices[0].finish_reason in ("stop", "length")
    assert [m.id for m in client.models.list()] == ["gemma-3-270m", "all-minilm-l6-v2"]
    vector = client.embeddings.create(model="text-embedding-ada-002", input="hello")
    assert len(vector.data[0].embedding) == 384
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=ASK, max_tokens=4)


def test_models_list_through_the_sdk(server: Server) -> None:
    models = {m.id: m for m in sdk(server).models.list()}
    assert list(models) == ["gemma-3-270m", "all-minilm-l6-v2"]
    assert models["all-minilm-l6-v2"].capabilities["embeddings"] is True  # type: ignore[attr-defined]
    assert sdk(server).models.retrieve("gemma-3-270m").id == "gemma-3-270m"


def test_listing_with_openai_028(server: Server, venv028: object) -> None:
    out = run_program(venv028, "listing_v028.py", server)  # type: ignore[arg-type]
    lines = dict(line.split("=", 1) for line in out.strip().splitlines())
    assert lines["models"] == "gemma-3-270m,all-minilm-l6-v2"
    assert "gpt-35-turbo" in lines["deployments"].split(",")
    assert lines["deployment"] == "gpt-4:gemma-3-270m"
    assert lines["new_version_deployments"] == "InvalidRequestError:404"


def test_context_overflow_has_the_real_numbers(server: Server) -> None:
    long = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(server).chat.completions.create(model="gpt-4", messages=long, max_tokens=10)  # type: ignore[arg-type]
    assert caught.value.code == "context_length_exceeded"
    assert "maximum context length is 4096 tokens" in caught.value.message
    assert "10 in the completion" in caught.value.message


def test_same_seed_same_answer_through_the_sdk(server: Server) -> None:
    client = sdk(server)

    def ask() -> list[str]:
        body = client.chat.completions.create(
            model="gpt-4", messages=ASK, n=2, temperature=1.0, seed=1234, max_tokens=30
        )
        return [c.message.content or "" for c in body.choices]

    first = ask()
    client.chat.completions.create(  # something else in between, cached afterwards
        model="gpt-4", messages=[{"role": "user", "content": "Name three rivers."}], max_tokens=30
    )
    assert ask() == first
