"""Chat completions request schema.

Spec: Azure/azure-rest-api-specs, file
``.../data-plane/AzureOpenAI/inference/stable/2024-10-21/inference.json``
(``createChatCompletionRequest``, ``chatCompletionRequestMessage``); fields in the spec's order.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import Field

from cerulean.protocol.apiversions import ApiVersion
from cerulean.protocol.common import WireModel, parse_body
from cerulean.protocol.gating import check_chat_values

__all__ = [
    "ChatCompletionMessageToolCall",
    "ChatCompletionMessageToolCallFunction",
    "ChatCompletionRequestMessage",
    "ChatCompletionRequestMessageContentPart",
    "CreateChatCompletionRequest",
    "parse_chat_request",
]

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ChatCompletionRequestMessageContentPart(WireModel):
    """A content part: ``{"type": "text", "text": ...}``, ``image_url`` or ``refusal``."""

    type: Literal["text", "image_url", "refusal", "input_audio"]
    text: str | None = None
    refusal: str | None = None


class ChatCompletionMessageToolCallFunction(WireModel):
    """The function an earlier assistant message called, with its arguments as JSON text."""

    name: str
    arguments: str


class ChatCompletionMessageToolCall(WireModel):
    """One call in an earlier assistant message's ``tool_calls``."""

    id: str
    type: Literal["function"]
    function: ChatCompletionMessageToolCallFunction


class ChatCompletionRequestMessage(WireModel):
    """A message of the conversation (any role; per-role rules are checked by the service)."""

    role: Role
    content: str | list[ChatCompletionRequestMessageContentPart] | None = None
    name: str | None = None
    tool_calls: list[ChatCompletionMessageToolCall] | None = None
    tool_call_id: str | None = None
    function_call: ChatCompletionMessageToolCallFunction | None = None


class CreateChatCompletionRequest(WireModel):
    """``POST /openai/deployments/{deployment-id}/chat/completions``."""

    messages: list[ChatCompletionRequestMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    stream: bool | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, int] | None = None
    user: str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[Any] | None = None
    function_call: str | dict[str, Any] | None = None
    stream_options: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # --- extensions (not in the 2024-10-21 spec) ---
    model: str | None = None  # sent by the SDKs; routing is by the path's deployment


def parse_chat_request(raw: bytes, version: ApiVersion) -> CreateChatCompletionRequest:
    """The body, checked against the arguments and values ``version`` knows (Azure's 400s)."""
    gate = functools.partial(check_chat_values, version=version)
    return parse_body(raw, CreateChatCompletionRequest, gate)
