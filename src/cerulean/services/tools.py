"""Function calling on the wire: ``tools``/``tool_choice`` and the legacy
``functions``/``function_call``, validated as Azure validates them.

:func:`read_tools` turns the request's fields into the engine's :class:`~cerulean.engines.base.
Tools` (or raises Azure's 400s); how a model is then made to call is the engine's business (the
llama.cpp engine: :mod:`cerulean.engines.llamacpp.tools`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from cerulean.engines.base import FunctionSpec, Tools
from cerulean.errors import InvalidRequest

__all__ = ["read_tools"]

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MAX_FUNCTIONS = 128


def read_tools(
    tools: list[Any] | None,
    tool_choice: str | dict[str, Any] | None,
    functions: list[Any] | None,
    function_call: str | dict[str, Any] | None,
    parallel_tool_calls: bool | None,
) -> Tools | None:
    """The request's functions and how they may be used, or ``None`` when it has none."""
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
    if choice in ("none", "auto", "required"):
        return Tools(specs, choice, parallel=parallel)  # type: ignore[arg-type]  # checked
    name = _named_choice(choice, "tool_choice", nested=True)
    _only(specs, name, "tool_choice")
    return Tools(specs, "function", function=name, parallel=False)


def _legacy_plan(functions: list[Any], function_call: str | dict[str, Any] | None) -> Tools:
    specs = tuple(
        _function(entry, f"functions.{i}")
        for i, entry in enumerate(_bounded(functions, "functions"))
    )
    _unique(specs, "functions")
    choice = "auto" if function_call is None else function_call
    if choice in ("none", "auto"):
        return Tools(specs, choice, parallel=False, legacy=True)  # type: ignore[arg-type]
    name = _named_choice(choice, "function_call", nested=False)
    _only(specs, name, "function_call")
    return Tools(specs, "function", function=name, parallel=False, legacy=True)


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
    strict = entry.get("strict")
    return FunctionSpec(name, description, parameters, strict if isinstance(strict, bool) else None)


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


def _only(specs: tuple[FunctionSpec, ...], name: str, param: str) -> None:
    if not any(spec.name == name for spec in specs):
        listed = "functions" if param == "function_call" else "tools"
        raise InvalidRequest(
            f"Invalid value for '{param}': no function named '{name}' was specified in the "
            f"'{listed}' parameter.",
            param=param,
        )


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
