"""Responses API request schema (``POST /openai/v1/responses``, ``/openai/responses``).

Spec: ``openai-openapi-2.3.0.json`` (``CreateResponse``); Azure serves it on the v1 routes and on
the dated route from api-version ``2025-03-01-preview`` (docs/responses.md). Input items are
read by :mod:`cerulean.services.responses`, which knows what each kind means for the model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cerulean.errors import InvalidRequest
from cerulean.protocol.apiversions import ApiVersion
from cerulean.protocol.common import WireModel, parse_body

__all__ = [
    "FIRST_RESPONSES_VERSION",
    "RESPONSE_ARGUMENTS",
    "CreateResponseRequest",
    "check_responses_version",
    "parse_response_request",
]

FIRST_RESPONSES_VERSION = "2025-03-01-preview"

# Every argument CreateResponse defines; a name outside it is Azure's "Unrecognized request
# argument". Those Cerulean cannot honour are refused by value in ``_UNSUPPORTED``.
RESPONSE_ARGUMENTS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "text",
        "temperature",
        "top_p",
        "max_output_tokens",
        "store",
        "previous_response_id",
        "metadata",
        "truncation",
        "stream",
        "background",
        "parallel_tool_calls",
        "user",
        "include",
        "reasoning",
        "service_tier",
        "top_logprobs",
        "max_tool_calls",
        "prompt",
        "prompt_cache_key",
        "safety_identifier",
        "stream_options",
        "conversation",
        "context_management",
        "moderation",
        "prompt_cache_options",
        "prompt_cache_retention",
    }
)

# Known arguments with features Cerulean does not have: refused unless the value is harmless.
_UNSUPPORTED: dict[str, Any] = {
    "reasoning": lambda v: v is None or v == {} or v.get("effort") is None,
    "prompt": lambda v: v is None,
    "conversation": lambda v: v is None,
    "context_management": lambda v: v is None,
    "moderation": lambda v: v is None,
    "top_logprobs": lambda v: v in (None, 0),
    "include": lambda v: v in (None, []),
}


class CreateResponseRequest(WireModel):
    """``POST /responses``: the model's input and how to answer it."""

    model: str | None = None  # the deployment (required; checked by the route)
    input: str | list[Any] | None = None
    instructions: str | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_output_tokens: int | None = Field(None, ge=16)
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    stream: bool | None = None
    background: bool | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    include: list[str] | None = None
    reasoning: dict[str, Any] | None = None
    service_tier: str | None = None
    top_logprobs: int | None = None
    max_tool_calls: int | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    stream_options: dict[str, Any] | None = None


def check_responses_version(version: ApiVersion) -> None:
    """The dated route exists from 2025-03-01-preview; older versions get Azure's 400."""
    if not version.at_least(FIRST_RESPONSES_VERSION):
        raise InvalidRequest(
            "Azure OpenAI Responses API is enabled only for api-version 2025-03-01-preview and "
            "later"
        )


def _gate(data: dict[str, Any]) -> None:
    unknown = [name for name in data if name not in RESPONSE_ARGUMENTS]
    if len(unknown) == 1:
        raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}")
    if unknown:
        raise InvalidRequest(f"Unrecognized request arguments supplied: {', '.join(unknown)}")
    for name, harmless in _UNSUPPORTED.items():
        if name in data and not _ok(harmless, data[name]):
            raise InvalidRequest(
                f"Unsupported parameter: '{name}' is not supported with this model.",
                param=name,
                code="unsupported_parameter",
            )
    metadata = data.get("metadata")
    if isinstance(metadata, dict):
        _check_metadata(metadata)


def _ok(harmless: Any, value: Any) -> bool:
    try:
        return bool(harmless(value))
    except (AttributeError, TypeError):
        return False


def _check_metadata(metadata: dict[str, Any]) -> None:
    """OpenAI's limits: 16 pairs, keys up to 64 characters, values up to 512."""
    if len(metadata) > 16:
        raise InvalidRequest(
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(metadata)} properties instead.",
            param="metadata",
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise InvalidRequest(
                "Invalid 'metadata': keys can be at most 64 characters long.", param="metadata"
            )
        if isinstance(value, str) and len(value) > 512:
            raise InvalidRequest(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length 512, but got a string with length {len(value)} instead.",
                param=f"metadata.{key}",
            )


def parse_response_request(raw: bytes) -> CreateResponseRequest:
    """The body, checked against what ``CreateResponse`` defines (Azure's 400s)."""
    return parse_body(raw, CreateResponseRequest, _gate)
