"""Server-sent events framing, as Azure OpenAI sends them (wire reference §4.4)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["DONE", "SSE_MEDIA_TYPE", "encode_event", "error_event"]

SSE_MEDIA_TYPE = "text/event-stream; charset=utf-8"
DONE = b"data: [DONE]\n\n"


def encode_event(payload: dict[str, Any]) -> bytes:
    """One ``data: <compact JSON>`` event followed by a blank line."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n\n"


def error_event(body: dict[str, Any]) -> bytes:
    """An error after the stream has started: clients raise on an event with an ``error`` key."""
    return encode_event(body)
