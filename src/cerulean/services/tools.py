"""Function calling: ``tools``/``tool_choice`` and the legacy ``functions``/``function_call``.

How a local model calls a function:

* The functions are described to the model in a system message (:func:`instructions`): it is
  told to answer with a JSON object ``{"name": ..., "arguments": {...}}`` to call one.
* The answer is produced under a grammar built from one JSON schema (:func:`call_schema`): an
  ``anyOf`` with one branch per function, whose ``name`` is a ``const`` and whose ``arguments``
  is that function's ``parameters`` schema. So a call always names a real function and its
  ``arguments`` always validate. With ``parallel_tool_calls`` the answer may also be an array of
  up to :data:`MAX_PARALLEL_CALLS` calls.
* ``required`` (or a named function) allows only a call; ``auto`` also allows plain text, which
  must not start with ``{`` or ``[`` — the first character of the answer tells which it is.

The grammar comes from llama.cpp's JSON-schema converter (see
:func:`cerulean.engines.llamacpp.sampling.response_grammar`), so it covers what that converter
covers; anything it cannot express is a 400.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any, Literal

from cerulean.errors import InvalidRequest

__all__ = [
    "FunctionSpec",
    "ParsedCall",
    "ToolPlan",
    "call_id",
    "call_schema",
    "instructions",
    "parse_answer",
    "plan_tools",
    "render_calls",
]

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MAX_FUNCTIONS = 128
# Calls one answer may hold when parallel calls are allowed: enough for real use, and a bound
# that keeps a small model from repeating calls until max_tokens.
MAX_PARALLEL_CALLS = 4
_ID_ALPHABET = string.ascii_letters + string.digits

Mode = Literal["auto", "required"]


@dataclass(frozen=True)
class FunctionSpec:
    """One callable function."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolPlan:
    """What the request allows: which functions, whether a call is forced, which API shape."""

    functions: tuple[FunctionSpec, ...]
    mode: Mode
    legacy: bool  # ``functions``/``function_call`` (answer in ``message.function_call``)
    parallel: bool

    @property
    def allow_text(self) -> bool:
        return self.mode == "auto"


@dataclass(frozen=True)
class ParsedCall:
    """A call the model made: the function's name and its arguments as JSON text."""

    name: str
    arguments: str


def call_id() -> str:
    """An id like OpenAI's ``call_`` + 24 characters."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


# -- reading the request ----------------------------------------------------------------------


def plan_tools(
    tools: list[Any] | None,
    tool_choice: str | dict[str, Any] | None,
    functions: list[Any] | None,
    function_call: str | dict[str, Any] | None,
    parallel_tool_calls: bool | None,
) -> ToolPlan | None:
    """The request's function-calling plan, or ``None`` when no function may be called."""
    if tools is not None and functions is not None:
        raise InvalidRequest(
            "'tools' and 'functions' cannot both be given; use 'tools'.", param="functions"
        )
    if functions is not None:
        return _legacy_plan(functions, function_call)
    if tool_choice is not None and not tools:
        raise InvalidRequest(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
        )
    if function_call is not None:
        raise InvalidRequest(
            "Invalid value for 'function_call': 'function_call' is only allowed when "
            "'functions' are specified.",
            param="function_call",
        )
    if tools is None:
        return None
    specs = tuple(_tool(entry, i) for i, entry in enumerate(_bounded(tools, "tools")))
    _unique(specs, "tools")
    parallel = parallel_tool_calls is not False
    choice = "auto" if tool_choice is None else tool_choice
    if choice == "none":
        return None
    if choice in ("auto", "required"):
        mode: Mode = "auto" if choice == "auto" else "required"
        return ToolPlan(specs, mode, legacy=False, parallel=parallel)
    name = _named_choice(choice, "tool_choice", nested=True)
    return ToolPlan(_only(specs, name, "tool_choice"), "required", legacy=False, parallel=False)


def _legacy_plan(
    functions: list[Any], function_call: str | dict[str, Any] | None
) -> ToolPlan | None:
    specs = tuple(
        _function(entry, f"functions.{i}")
        for i, entry in enumerate(_bounded(functions, "functions"))
    )
    _unique(specs, "functions")
    choice = "auto" if function_call is None else function_call
    if choice == "none":
        return None
    if choice == "auto":
        return ToolPlan(specs, "auto", legacy=True, parallel=False)
    name = _named_choice(choice, "function_call", nested=False)
    return ToolPlan(_only(specs, name, "function_call"), "required", legacy=True, parallel=False)


def _bounded(entries: list[Any], param: str) -> list[Any]:
    if not entries:
        raise InvalidRequest(f"[] is too short - '{param}'", param=param)
    if len(entries) > _MAX_FUNCTIONS:
        raise InvalidRequest(
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{_MAX_FUNCTIONS}, but got an array with length {len(entries)} instead.",
            param=param,
        )
    return entries


def _tool(entry: Any, index: int) -> FunctionSpec:
    where = f"tools.{index}"
    if not isinstance(entry, dict):
        raise InvalidRequest(f"{_short(entry)} is not of type 'object' - '{where}'", param=where)
    if entry.get("type") != "function":
        raise InvalidRequest(
            f"Invalid value: {_short(entry.get('type'))}. Supported values are: 'function'.",
            param=f"{where}.type",
        )
    if "function" not in entry:
        raise InvalidRequest(
            f"'function' is a required property - '{where}'", param=f"{where}.function"
        )
    return _function(entry["function"], f"{where}.function")


def _function(entry: Any, where: str) -> FunctionSpec:
    if not isinstance(entry, dict):
        raise InvalidRequest(f"{_short(entry)} is not of type 'object' - '{where}'", param=where)
    name = entry.get("name")
    if not isinstance(name, str):
        raise InvalidRequest(f"'name' is a required property - '{where}'", param=f"{where}.name")
    if not _NAME.match(name):
        raise InvalidRequest(
            f"Invalid '{where}.name': string does not match pattern. Expected a string that "
            "matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.",
            param=f"{where}.name",
        )
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise InvalidRequest(
            f"{_short(description)} is not of type 'string' - '{where}.description'",
            param=f"{where}.description",
        )
    parameters = entry.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise InvalidRequest(
            f"{_short(parameters)} is not of type 'object' - '{where}.parameters'",
            param=f"{where}.parameters",
        )
    return FunctionSpec(name, description, parameters)


def _unique(specs: tuple[FunctionSpec, ...], param: str) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise InvalidRequest(
                f"Invalid '{param}': duplicate function name '{spec.name}'.", param=param
            )
        seen.add(spec.name)


def _named_choice(choice: Any, param: str, *, nested: bool) -> str:
    allowed = "'none', 'auto', 'required'" if nested else "'none', 'auto'"
    if isinstance(choice, str):
        raise InvalidRequest(
            f"Invalid value: '{choice}'. Supported values are: {allowed} or an object naming a "
            "function.",
            param=param,
        )
    holder = choice.get("function") if nested and isinstance(choice, dict) else choice
    if nested and isinstance(choice, dict) and choice.get("type") != "function":
        raise InvalidRequest(
            f"Invalid value: {_short(choice.get('type'))}. Supported values are: 'function'.",
            param=f"{param}.type",
        )
    name = holder.get("name") if isinstance(holder, dict) else None
    if not isinstance(name, str):
        where = f"{param}.function" if nested else param
        raise InvalidRequest(f"'name' is a required property - '{where}'", param=f"{where}.name")
    return name


def _only(specs: tuple[FunctionSpec, ...], name: str, param: str) -> tuple[FunctionSpec, ...]:
    chosen = tuple(spec for spec in specs if spec.name == name)
    if not chosen:
        listed = "functions" if param == "function_call" else "tools"
        raise InvalidRequest(
            f"Invalid value for '{param}': no function named '{name}' was specified in the "
            f"'{listed}' parameter.",
            param=param,
        )
    return chosen


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- what the model is told and how it must answer --------------------------------------------


def instructions(plan: ToolPlan) -> str:
    """The system text that describes the functions and the answer format."""
    lines = ["You can call these functions:"]
    for spec in plan.functions:
        about = f": {spec.description.strip()}" if spec.description.strip() else ""
        lines.append(f"- {spec.name}{about}")
        lines.append(f"  arguments (JSON schema): {json.dumps(spec.parameters, sort_keys=True)}")
    call = '{"name": "<function name>", "arguments": {<arguments>}}'
    form = f"a JSON object {call}"
    if plan.parallel:
        form += " (or, to call several at once, a JSON array of such objects)"
    if plan.mode == "required":
        lines.append(f"Answer only with {form}.")
    else:
        lines.append(f"To call a function, answer only with {form}; otherwise answer in text.")
    return "\n".join(lines)


def call_schema(plan: ToolPlan) -> dict[str, Any]:
    """The JSON schema every call answer validates against."""
    branches = [
        {
            "type": "object",
            "properties": {"name": {"const": spec.name}, "arguments": spec.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for spec in plan.functions
    ]
    one: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    if not plan.parallel:
        return one
    several = {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_PARALLEL_CALLS}
    return {"anyOf": [one, several]}


# -- reading the answer -----------------------------------------------------------------------


def looks_like_call(text: str) -> bool | None:
    """Whether an answer is a call (``None`` while only whitespace has been seen)."""
    stripped = text.lstrip()
    if not stripped:
        return None
    return stripped[0] in "{["


def parse_answer(text: str) -> list[ParsedCall] | None:
    """The calls in a finished answer, or ``None`` when it is text (or a cut-off call)."""
    if not looks_like_call(text):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    items = value if isinstance(value, list) else [value]
    calls: list[ParsedCall] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        arguments = json.dumps(item.get("arguments", {}), ensure_ascii=False)
        calls.append(ParsedCall(item["name"], arguments))
    return calls or None


def render_calls(calls: list[tuple[str, str]]) -> str:
    """An assistant message's earlier calls ``(name, arguments JSON)``, as the model writes them.

    Used for the history, so the model sees its own past calls in the format it is asked for.
    """
    rendered = []
    for name, arguments in calls:
        try:
            args: Any = json.loads(arguments)
        except (json.JSONDecodeError, TypeError):
            args = arguments
        rendered.append({"name": name, "arguments": args})
    value: Any = rendered[0] if len(rendered) == 1 else rendered
    return json.dumps(value, ensure_ascii=False)
