"""Log lines as JSON (``cerulean serve --log-format json``): one object a line.

Every record becomes ``{"time", "level", "logger", "message"}`` (and ``"exception"`` with its
traceback); the per-request line of ``cerulean.access`` adds its fields (request id, deployment,
operation, caller, status, tokens, TTFT, duration: docs/telemetry.md), passed in the record's
:data:`ACCESS_FIELDS` attribute. No key, token or prompt is ever among them.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

__all__ = ["ACCESS_FIELDS", "JsonFormatter"]

ACCESS_FIELDS = "cerulean_fields"  # the LogRecord attribute carrying a request line's fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record, fields of a request line included."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, ACCESS_FIELDS, None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
