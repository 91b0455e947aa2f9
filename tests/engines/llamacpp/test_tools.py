"""The llama.cpp engine's function calling: the schema, the instructions and the call reader.

No model: these are the pure-Python parts of ``cerulean.engines.llamacpp.tools``.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from cerulean.engines.base import ChatMessage, FunctionSpec, ToolCall, ToolCallDelta, Tools
from cerulean.engines.llamacpp.tools import (
    MAX_PARALLEL_CALLS,
    CallReader,
    active,
    call_id,
    call_schema,
    instructions,
    render_calls,
    with_instructions,
)

WEATHER = FunctionSpec(
    "get_weather",
    "Weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = FunctionSpec("get_time")
CALL = {"name": "get_weather", "arguments": {"city": "Oslo"}}


def read(text: str, *, allow_text: bool = False, step: int = 1) -> tuple[str, list[ToolCallDelta]]:
    """Feed ``text`` ``step`` characters at a time; the text shown and every delta."""
    reader = CallReader(allow_text, new_id=lambda: "call_x")
    shown, deltas = "", []
    for i in range(0, len(text), step):
        piece, more = reader.feed(text[i : i + step])
        shown += piece
        deltas += more
    return shown, deltas


def calls_of(deltas: list[ToolCallDelta]) -> list[tuple[str, str]]:
    """The (name, arguments) of each call the deltas make, in order."""
    out: dict[int, list[str]] = {}
    for delta in deltas:
        if delta.name is not None:
            out[delta.index] = [delta.name, ""]
        out[delta.index][1] += delta.arguments
    return [(name, args) for _, (name, args) in sorted(out.items())]


def test_schema_accepts_only_real_calls() -> None:
    schema = call_schema(Tools((WEATHER, TIME), "required", parallel=False))
    jsonschema.validate(CALL, schema)
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
    schema = call_schema(Tools((WEATHER,), "required", parallel=True))
    jsonschema.validate(CALL, schema)
    jsonschema.validate([CALL, CALL], schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([], schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([CALL] * (MAX_PARALLEL_CALLS + 1), schema)


@pytest.mark.parametrize(
    "tools",
    [
        Tools((WEATHER, TIME), "auto", parallel=False),
        Tools((WEATHER, TIME), "function", "get_weather"),
        Tools((WEATHER,), "auto", legacy=True),
    ],
    ids=["parallel-false", "named", "legacy"],
)
def test_one_call_only_without_parallel_calls(tools: Tools) -> None:
    schema = call_schema(tools)
    jsonschema.validate(CALL, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([CALL], schema)


def test_a_named_function_is_the_only_one_offered() -> None:
    tools = Tools((WEATHER, TIME), "function", "get_time")
    assert [f.name for f in active(tools)] == ["get_time"]
    assert "get_weather" not in instructions(tools)
    assert active(Tools((WEATHER,), "none")) == ()
    assert active(None) == ()


def test_instructions_name_every_function_and_the_format() -> None:
    text = instructions(Tools((WEATHER, TIME), "auto", parallel=False))
    assert "get_weather: Weather in a city" in text and "- get_time" in text
    assert '"required": ["city"]' in text
    assert "otherwise answer in text" in text and "array" not in text
    assert "array" in instructions(Tools((WEATHER,), "required"))


def test_instructions_join_the_system_message() -> None:
    tools = Tools((WEATHER,), "auto")
    merged = with_instructions(
        (ChatMessage("system", "Be brief."), ChatMessage("user", "hi")), tools
    )
    assert merged[0].role == "system" and merged[0].text.startswith("Be brief.\n\n")
    assert "get_weather" in merged[0].text and merged[1].text == "hi"
    added = with_instructions((ChatMessage("user", "hi"),), tools)
    assert [m.role for m in added] == ["system", "user"]


def test_history_calls_render_as_the_model_writes_them() -> None:
    one = render_calls([ToolCall("call_1", "f", '{"x": 1}')])
    assert json.loads(one) == {"name": "f", "arguments": {"x": 1}}
    two = json.loads(render_calls([ToolCall("a", "f", "{}"), ToolCall("b", "g", "not json")]))
    assert two == [{"name": "f", "arguments": {}}, {"name": "g", "arguments": "not json"}]


def test_call_ids_look_like_openais() -> None:
    ids = {call_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("call_") and len(i) == 29 and i[5:].isalnum() for i in ids)


# -- the reader ----------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_a_call_streams_its_name_first_then_its_arguments(step: int) -> None:
    text = '{"name": "get_weather", "arguments": {"city": "Pa\\"ris", "days": 3}}'
    shown, deltas = read(text, step=step)
    assert shown == ""  # never a character of the call form as content
    assert deltas[0] == ToolCallDelta(0, id="call_x", name="get_weather", arguments="")
    assert all(d.id is None and d.name is None for d in deltas[1:])
    assert calls_of(deltas) == [("get_weather", '{"city": "Pa\\"ris", "days": 3}')]
    if step == 1:  # one piece per character read: the arguments arrive as they are generated
        assert len(deltas) > 10


def test_an_array_of_calls_gives_each_its_index() -> None:
    text = '[{"name": "a", "arguments": {"q": [1, {"r": "}"}]}}, {"name": "b", "arguments": {}}]'
    _, deltas = read(text, step=2)
    assert calls_of(deltas) == [("a", '{"q": [1, {"r": "}"}]}'), ("b", "{}")]
    assert [d.index for d in deltas if d.name] == [0, 1]


def test_a_call_cut_off_keeps_what_was_written() -> None:
    shown, deltas = read('{"name": "get_weather", "arguments": {"city": "Pa')
    assert shown == "" and calls_of(deltas) == [("get_weather", '{"city": "Pa')]
    shown, deltas = read('{"name": "get_wea')
    assert shown == "" and deltas == []  # no name yet: no call, and no grammar text either


def test_bare_argument_values_end_where_the_value_does() -> None:
    _, deltas = read('{"name": "f", "arguments": 12}', step=1)
    assert calls_of(deltas) == [("f", "12")]


def test_arguments_before_the_name_wait_for_it() -> None:
    _, deltas = read('{"arguments": {"x": 1}, "name": "f"}')
    assert deltas[0].name == "f"
    assert calls_of(deltas) == [("f", '{"x": 1}')]


def test_text_stays_text_with_auto() -> None:
    shown, deltas = read("Hello {there}", allow_text=True, step=4)
    assert shown == "Hello {there}" and deltas == []


def test_without_text_allowed_everything_is_read_as_a_call() -> None:
    shown, deltas = read("oops", allow_text=False)
    assert shown == "" and deltas == []


def test_a_repeated_call_is_dropped_and_a_different_one_kept() -> None:
    """Further calls of a parallel answer go out whole once complete; an exact repeat of an
    earlier call (a small model's habit) is dropped, and indexes stay dense."""
    same = '{"name": "f", "arguments": {"x": 1}}'
    repeat = '{"name": "f", "arguments": {"x":1}}'  # the same JSON, written differently
    other = '{"name": "f", "arguments": {"x": 2}}'
    _, deltas = read(f"[{same}, {repeat}, {other}, {same}]", step=2)
    assert calls_of(deltas) == [("f", '{"x": 1}'), ("f", '{"x": 2}')]
    assert [d.index for d in deltas if d.name] == [0, 1]
    later = [d for d in deltas if d.index == 1]
    assert len(later) == 2 and later[0].name == "f" and later[1].arguments == '{"x": 2}'


def test_a_cut_further_call_is_kept_unless_it_was_repeating() -> None:
    reader = CallReader(False, new_id=lambda: "call_x")
    _, first = reader.feed('[{"name": "f", "arguments": {"x": 1}}, {"name": "f", "arguments": {"x"')
    assert calls_of(first) == [("f", '{"x": 1}')]
    assert reader.finish() == []  # on its way to repeating {"x": 1}
    reader = CallReader(False, new_id=lambda: "call_x")
    reader.feed('[{"name": "f", "arguments": {"x": 1}}, {"name": "g", "arguments": {"y"')
    assert calls_of(reader.finish()) == [("g", '{"y"')]
