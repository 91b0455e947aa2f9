"""What every body and chunk of one inference answer shares, whatever the route."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cerulean.errors import InvalidRequest
from cerulean.protocol.apiversions import ApiVersion
from cerulean.protocol.ids import completion_id

__all__ = ["CHOICE_FILTER", "PROMPT_FILTER", "AnswerContext", "logit_bias_pairs", "stop_strings"]

# Content-filter annotations: no filter runs, so every category reads "safe" (§4.2).
_SAFE = {"filtered": False, "severity": "safe"}
CHOICE_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
PROMPT_FILTER = {**CHOICE_FILTER, "jailbreak": {"filtered": False, "detected": False}}


@dataclass(frozen=True)
class AnswerContext:
    """Model, api-version and fingerprint of an answer, with its id and creation time."""

    model: str
    api_version: ApiVersion
    fingerprint: str | None = None
    id: str = field(default_factory=completion_id)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def annotate(self) -> bool:
        """Whether content-filter annotations belong in the answer (§4.2)."""
        return self.api_version.has_content_filter_annotations

    def stamp(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add ``system_fingerprint`` where the version has it (from 2023-12-01-preview)."""
        if self.fingerprint is not None and self.api_version.at_least("2023-12-01-preview"):
            body["system_fingerprint"] = self.fingerprint
        return body


# -- request parameters chat and completions share ---------------------------------------------


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if len(stops) > 4:
        raise InvalidRequest(f"{stops!r} is too long - 'stop'", param="stop")
    return tuple(s for s in stops if s)


def logit_bias_pairs(biases: dict[str, int] | None) -> tuple[tuple[int, float], ...]:
    """``{"token id": bias}`` with ids as decimal strings and biases in [-100, 100]."""
    out: list[tuple[int, float]] = []
    for key, bias in (biases or {}).items():
        if not (key.isascii() and key.isdigit()):
            raise InvalidRequest(
                f"Invalid key in 'logit_bias': {key}. Keys must be token ids.", param="logit_bias"
            )
        if not -100 <= bias <= 100:
            raise InvalidRequest(
                f"Invalid value for 'logit_bias' key {key}: {bias}. Values must be between -100 "
                "and 100.",
                param="logit_bias",
            )
        out.append((int(key), float(bias)))
    return tuple(out)
