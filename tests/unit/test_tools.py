"""Function-calling plans, schemas and answer parsing (no model)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from cerulean.errors import InvalidRequest
from cerulean.services.tools import (
    MAX_PARALLEL_CALLS,
    call_id,
    call_schema,
    instructions,
    looks_like_call,
    parse_answer,
    plan_tools,
    render_calls,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}


def test_auto_by_default_with_parallel_calls() -> None:
    plan = plan_tools([WEATHER, TIME], None, None, None, None)
    assert plan is not None
    assert plan.mode == "auto" and plan.allow_text and plan.parallel and not plan.legacy
    assert [f.name for f in plan.functions] == ["get_weather", "get_time"]
    assert plan.functions[1].parameters == {"type": "object", "properties": {}}


def test_none_means_no_plan() -> None:
    assert plan_tools([WEATHER], "none", None, None, None) is None
    assert plan_tools(None, None, None, None, None) is None
    assert plan_tools(None, None, [WEATHER["function"]], "none", None) is None


def test_named_tool_forces_that_one() -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    plan = plan_tools([WEATHER, TIME], choice, None, None, None)
    assert plan is not None and plan.mode == "required" and not plan.parallel
    assert [f.name for f in plan.functions] == ["get_time"]


def test_legacy_functions() -> None:
    plan = plan_tools(None, None, [WEATHER["function"]], {"name": "get_weather"}, None)
    assert plan is not None and plan.legacy and plan.mode == "required" and not plan.parallel


@pytest.mark.parametrize(
    ("args", "param"),
    [
        (([WEATHER], None, [WEATHER["function"]], None, None), "functions"),
        ((None, "auto", None, None, None), "tool_choice"),
        ((None, None, None, "auto", None), "function_call"),
        (([], None, None, None, None), "tools"),
        (([{"type": "retrieval"}], None, None, None, None), "tools.0.type"),
        (([{"type": "function"}], None, None, None, None), "tools.0.function"),
        (
            ([{"type": "function", "function": {"name": "a b"}}], None, None, None, None),
            "tools.0.function.name",
        ),
        (
            (
                [{"type": "function", "function": {"name": "f", "parameters": 3}}],
                None,
                None,
                None,
                None,
            ),
            "tools.0.function.parameters",
        ),
        (([WEATHER, WEATHER], None, None, None, None), "tools"),
        (([WEATHER], "sometimes", None, None, None), "tool_choice"),
        (
            ([WEATHER], {"type": "function", "function": {"name": "nope"}}, None, None, None),
            "tool_choice",
        ),
        (([WEATHER], {"type": "function"}, None, None, None), "tool_choice.function.name"),
        (([WEATHER] * 129, None, None, None, None), "tools"),
        ((None, None, [WEATHER["function"]], {"name": "nope"}, None), "function_call"),
        ((None, None, ["f"], None, None), "functions.0"),
    ],
)
def test_bad_tools_are_400s(args: tuple[object, ...], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        plan_tools(*args)  # type: ignore[arg-type]
    assert caught.value.param == param
    assert caught.value.status_code == 400


def test_schema_accepts_only_real_calls() -> None:
    plan = plan_tools([WEATHER, TIME], "required", None, None, False)
    assert plan is not None
    schema = call_schema(plan)
    jsonschema.validate({"name": "get_weather", "arguments": {"city": "Oslo"}}, schema)
    jsonschema.validate({"name": "get_time", "arguments": {}}, schema)
    for bad in (
        {"name": "get_weather", "arguments": {}},
        {"name": "launch", "arguments": {}},
        {"name": "get_time"},
        [{"name": "get_time", "arguments": {}}],
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_parallel_schema_is_a_call_or_a_bounded_array() -> None:
    plan = plan_tools([WEATHER], "required", None, None, True)
    assert plan is not None
    schema = call_schema(plan)
    call = {"name": "get_weather", "arguments": {"city": "Oslo"}}
    jsonschema.validate(call, schema)
    jsonschema.validate([call, call], schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([], schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([call] * (MAX_PARALLEL_CALLS + 1), schema)


def test_instructions_name_every_function_and_the_format() -> None:
    plan = plan_tools([WEATHER, TIME], "auto", None, None, False)
    assert plan is not None
    text = instructions(plan)
    assert "get_weather: Weather in a city" in text and "- get_time" in text
    assert '"required": ["city"]' in text
    assert "otherwise answer in text" in text


def test_answers_are_read_by_their_first_visible_character() -> None:
    assert looks_like_call("  \n") is None
    assert looks_like_call(" {") is True and looks_like_call("[") is True
    assert looks_like_call(" Hello") is False
    calls = parse_answer(' {"name": "get_time", "arguments": {"tz": "UTC"}}')
    assert calls is not None and calls[0].name == "get_time"
    assert json.loads(calls[0].arguments) == {"tz": "UTC"}
    many = parse_answer('[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]')
    assert many is not None and [c.name for c in many] == ["a", "b"]
    assert parse_answer("Hello") is None
    assert parse_answer('{"name": "a", "argu') is None  # cut off by max_tokens


def test_history_calls_render_as_the_model_writes_them() -> None:
    assert json.loads(render_calls([("f", '{"x": 1}')])) == {"name": "f", "arguments": {"x": 1}}
    two = json.loads(render_calls([("f", "{}"), ("g", "not json")]))
    assert two == [{"name": "f", "arguments": {}}, {"name": "g", "arguments": "not json"}]


def test_call_ids_look_like_openais() -> None:
    ids = {call_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("call_") and len(i) == 29 and i[5:].isalnum() for i in ids)
