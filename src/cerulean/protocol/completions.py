"""Legacy completions request schema.

Spec: Azure/azure-rest-api-specs, file
``.../data-plane/AzureOpenAI/inference/stable/2024-10-21/inference.json``
(``createCompletionRequest``); fields in the spec's order. The 2023-05-15 spec adds Azure's
``completion_config`` and ``cache_level`` and an optional ``model``.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import Field

from cerulean.protocol.apiversions import ApiVersion
from cerulean.protocol.common import WireModel, parse_body
from cerulean.protocol.gating import COMPLETION_ARGUMENTS, check_arguments

__all__ = ["DEFAULT_MAX_TOKENS", "CreateCompletionRequest", "Prompt", "parse_completion_request"]

DEFAULT_MAX_TOKENS = 16

# A string, strings, token ids, or arrays of token ids (the spec lists the first two; the
# service and both SDKs accept all four). Null is the start of a new document.
Prompt = str | list[str] | list[int] | list[list[int]] | None


class CreateCompletionRequest(WireModel):
    """``POST /openai/deployments/{deployment-id}/completions``."""

    prompt: Prompt
    best_of: int | None = Field(None, ge=0, le=20)
    echo: bool | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, int] | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, ge=0)
    n: int | None = Field(None, ge=1, le=128)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    suffix: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    user: str | None = None
    # --- 2023-05-15 (Azure only) and extensions ---
    completion_config: str | None = None
    cache_level: int | None = None
    model: str | None = None  # sent by the SDKs; routing is by the path's deployment
    stream_options: dict[str, Any] | None = None  # as on chat: {"include_usage": true}


def parse_completion_request(raw: bytes, version: ApiVersion) -> CreateCompletionRequest:
    """The body, checked against the arguments ``version`` knows (Azure's 400s)."""
    gate = functools.partial(check_arguments, table=COMPLETION_ARGUMENTS, version=version)
    return parse_body(raw, CreateCompletionRequest, gate)
