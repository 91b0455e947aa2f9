"""Shared pieces of the wire protocol: the base model and validation-error translation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from cerulean.errors import InvalidRequest

__all__ = ["WireModel", "parse_body", "validation_message"]

M = TypeVar("M", bound=BaseModel)

_JSON_TYPES = {
    "string_type": "string",
    "float_type": "number",
    "int_type": "integer",
    "int_from_float": "integer",
    "bool_type": "boolean",
    "list_type": "array",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
    "literal_error": "one of the allowed values",
    "none_required": "null",
}


class WireModel(BaseModel):
    """Base of request schemas: strict JSON types (no "0.5" for 0.5), unknown fields kept."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)


def _path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def validation_message(error: Any) -> tuple[str, str | None]:
    """Azure's (jsonschema-style) message and ``param`` for one pydantic error dict."""
    loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
    where = _path(loc)
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "missing":
        parent = _path(loc[:-1])
        suffix = f" - '{parent}'" if parent else ""
        return f"'{loc[-1]}' is a required property{suffix}", where
    if kind in ("less_than_equal", "less_than"):
        bound = _num(ctx.get("le", ctx.get("lt")))
        return f"{value!r} is greater than the maximum of {bound} - '{where}'", where
    if kind in ("greater_than_equal", "greater_than"):
        bound = _num(ctx.get("ge", ctx.get("gt")))
        return f"{value!r} is less than the minimum of {bound} - '{where}'", where
    if kind == "too_short":
        return f"{value!r} is too short - '{where}'", where
    if kind == "too_long":
        return f"{value!r} is too long - '{where}'", where
    if kind in _JSON_TYPES:
        return f"{_short(value)} is not of type '{_JSON_TYPES[kind]}' - '{where}'", where
    return f"{error['msg']} - '{where}'", where


def _is_union_tag(part: int | str) -> bool:
    # pydantic names union members in locations ("str", "list[...]", "function-after[...]").
    return isinstance(part, str) and (
        "[" in part or part in ("str", "int", "float", "bool", "list")
    )


def _num(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_body(
    raw: bytes, model: type[M], gate: Callable[[dict[str, Any]], None] | None = None
) -> M:
    """Decode a JSON request body into ``model``, or raise Azure's 400.

    ``gate`` sees the decoded object first (the api-version's argument rules).
    """
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request. ({exc}) The OpenAI API expects a "
            "JSON payload, but what was sent was not valid JSON."
        ) from exc
    if not isinstance(data, dict):
        raise InvalidRequest(f"{_short(data)} is not of type 'object'")
    if gate is not None:
        gate(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc.errors()[0])
        raise InvalidRequest(message, param=param) from exc
