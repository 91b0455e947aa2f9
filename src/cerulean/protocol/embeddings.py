"""Embeddings request schema.

Spec: Azure/azure-rest-api-specs, file
``.../data-plane/AzureOpenAI/inference/stable/2024-10-21/inference.json``, the inline request
schema of ``POST /deployments/{deployment-id}/embeddings`` (operation ``Embeddings_Create``); the
spec has no name for it, so it takes OpenAI's, ``CreateEmbeddingRequest``. Fields in the spec's
order. ``input`` also takes token arrays, as the 2025 preview spec and OpenAI's API do.
"""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import Field

from cerulean.protocol.apiversions import ApiVersion
from cerulean.protocol.common import WireModel, parse_body
from cerulean.protocol.gating import EMBEDDING_ARGUMENTS, check_arguments

__all__ = [
    "MAX_INPUTS",
    "CreateEmbeddingRequest",
    "EmbeddingInputValue",
    "parse_embedding_request",
]

MAX_INPUTS = 2048  # the spec's maxItems for an array input

# The shapes only; lengths (1..2048 items, no empty text or token array) are checked by the
# service, which names the offending item the way Azure's schema errors do ('input.3').
EmbeddingInputValue = str | list[str] | list[int] | list[list[int]]


class CreateEmbeddingRequest(WireModel):
    """``POST /openai/deployments/{deployment-id}/embeddings``."""

    input: EmbeddingInputValue
    user: str | None = None
    input_type: str | None = None
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(None, ge=1)
    # --- not in the 2024-10-21 schema (the 2023-05-15 one has it) ---
    model: str | None = None  # sent by the SDKs; routing is by the path's deployment


def parse_embedding_request(raw: bytes, version: ApiVersion) -> CreateEmbeddingRequest:
    """The body, checked against the arguments ``version`` knows (Azure's 400s)."""
    gate = functools.partial(check_arguments, table=EMBEDDING_ARGUMENTS, version=version)
    return parse_body(raw, CreateEmbeddingRequest, gate)
