"""Reading ``tools``/``tool_choice`` and ``functions``/``function_call`` as Azure does."""

from __future__ import annotations

import pytest

from cerulean.errors import InvalidRequest
from cerulean.services.tools import read_tools

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
    tools = read_tools([WEATHER, TIME], None, None, None, None)
    assert tools is not None
    assert tools.choice == "auto" and tools.parallel and not tools.legacy
    assert [f.name for f in tools.functions] == ["get_weather", "get_time"]
    assert tools.functions[1].parameters == {"type": "object", "properties": {}}
    assert tools.functions[0].description == "Weather in a city"


def test_none_keeps_the_functions_for_the_engine() -> None:
    """``tool_choice: none`` still describes the tools (an engine with native tools takes them);
    without tools there is nothing."""
    tools = read_tools([WEATHER], "none", None, None, None)
    assert tools is not None and tools.choice == "none"
    assert read_tools(None, None, None, None, None) is None
    legacy = read_tools(None, None, [WEATHER["function"]], "none", None)
    assert legacy is not None and legacy.choice == "none" and legacy.legacy


def test_named_tool_forces_that_one() -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    tools = read_tools([WEATHER, TIME], choice, None, None, None)
    assert tools is not None and tools.choice == "function" and tools.function == "get_time"
    assert not tools.parallel and len(tools.functions) == 2


def test_parallel_tool_calls_false_is_kept() -> None:
    tools = read_tools([WEATHER], "required", None, None, False)
    assert tools is not None and tools.choice == "required" and not tools.parallel


def test_legacy_functions() -> None:
    tools = read_tools(None, None, [WEATHER["function"]], {"name": "get_weather"}, None)
    assert tools is not None and tools.legacy and tools.choice == "function"
    assert tools.function == "get_weather" and not tools.parallel


def test_strict_is_read() -> None:
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    tools = read_tools([strict], None, None, None, None)
    assert tools is not None and tools.functions[0].strict is True


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
        read_tools(*args)  # type: ignore[arg-type]
    assert caught.value.param == param
    assert caught.value.status_code == 400
