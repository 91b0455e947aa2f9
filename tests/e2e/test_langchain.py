"""LangChain's Azure classes, unchanged, against a real server with the real model."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import AzureChatOpenAI
from pydantic import BaseModel, Field

from tests.e2e.conftest import Server


def chat(server: Server, **kwargs: object) -> AzureChatOpenAI:
    return AzureChatOpenAI(
        azure_endpoint=server.endpoint,
        api_key=server.key1,  # type: ignore[arg-type]
        api_version="2024-10-21",
        azure_deployment="gpt-4",
        max_retries=0,
        **kwargs,  # type: ignore[arg-type]
    )


def test_invoke_and_stream(server: Server) -> None:
    llm = chat(server, max_tokens=8, temperature=0)
    answer = llm.invoke("Say hello.")
    assert isinstance(answer, AIMessage) and isinstance(answer.content, str)
    assert answer.response_metadata["finish_reason"] in ("stop", "length")
    assert answer.usage_metadata is not None and answer.usage_metadata["input_tokens"] > 0
    pieces = list(llm.stream("Say hello."))
    assert pieces and all(isinstance(p.content, str) for p in pieces)


class Weather(BaseModel):
    """The weather report for a city."""

    city: str = Field(max_length=20)
    temperature_celsius: int


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output(server: Server, method: str) -> None:
    llm = chat(server, max_tokens=60, temperature=0)
    structured = llm.with_structured_output(Weather, method=method)  # type: ignore[arg-type]
    report = structured.invoke("Report the weather in Oslo as JSON.")
    assert isinstance(report, Weather)
    assert len(report.city) <= 20


def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"Sunny in {city}"


def test_bind_tools_round_trip(server: Server) -> None:
    llm = chat(server, max_tokens=60, temperature=0).bind_tools(
        [get_weather], tool_choice="get_weather"
    )
    question = HumanMessage("What is the weather in Oslo?")
    first = llm.invoke([question])
    assert isinstance(first, AIMessage) and first.tool_calls
    call = first.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    result = ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"] or "")
    final = chat(server, max_tokens=10).invoke([question, first, result])
    assert isinstance(final.content, str)
    assert json.dumps(final.response_metadata)  # serialisable metadata, finish reason included
