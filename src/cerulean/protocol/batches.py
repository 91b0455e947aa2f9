"""Batch request schema.

Spec: OpenAI's ``CreateBatchRequest`` (openai-openapi 2.3.0) as Azure's batch docs use it
(``includes/batch/batch-rest.md``): ``input_file_id``, ``endpoint``, ``completion_window``,
``metadata`` and ``output_expires_after``. Azure also takes the older ``/chat/completions``
endpoint spelling.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cerulean.protocol.common import WireModel, parse_body

__all__ = ["BATCH_ENDPOINTS", "CreateBatchRequest", "FileExpiration", "parse_batch_request"]

# The endpoint a batch names -> the operation its lines run.
BATCH_ENDPOINTS = {
    "/chat/completions": "chat",
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
}


class FileExpiration(WireModel):
    """``output_expires_after``: the output and error files expire this long after creation."""

    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=2_592_000)


class CreateBatchRequest(WireModel):
    """``POST /openai/batches`` and ``POST /openai/v1/batches``."""

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None
    output_expires_after: FileExpiration | None = None


def parse_batch_request(raw: bytes) -> CreateBatchRequest:
    """The body, or Azure's 400."""
    return parse_body(raw, CreateBatchRequest)
