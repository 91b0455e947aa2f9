"""Which request arguments each api-version knows (Azure's "Unrecognized request argument").

Azure validates bodies against the requested version's schema: a field that version does not
define — a newer parameter, or a misspelt one — is a 400 ``Unrecognized request argument
supplied: <name>`` (wire reference §5.1). The tables give the first version that defines each
field, read from the specs of ``Azure/azure-rest-api-specs`` (2022-12-01 … 2024-05-01-preview);
later entries follow Azure's release notes. Decisions where the specs are silent or where real
clients would break are in ``docs/compatibility.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cerulean.errors import InvalidRequest
from cerulean.protocol.apiversions import ApiVersion

__all__ = [
    "CHAT_ARGUMENTS",
    "COMPLETION_ARGUMENTS",
    "EMBEDDING_ARGUMENTS",
    "UNSUPPORTED_CHAT_ARGUMENTS",
    "check_arguments",
    "check_chat_values",
]

ALL = "0000-00-00"  # known in every version

CHAT_ARGUMENTS: Mapping[str, str] = {
    # 2023-03-15-preview / 2023-05-15
    "messages": ALL,
    "temperature": ALL,
    "top_p": ALL,
    "n": ALL,
    "stream": ALL,
    "stop": ALL,
    "max_tokens": ALL,
    "presence_penalty": ALL,
    "frequency_penalty": ALL,
    "logit_bias": ALL,
    "user": ALL,
    "model": ALL,  # both SDKs send it; routing is by the path
    "functions": "2023-07-01-preview",
    "function_call": "2023-07-01-preview",
    "seed": "2023-12-01-preview",
    "response_format": "2023-12-01-preview",
    "tools": "2023-12-01-preview",
    "tool_choice": "2023-12-01-preview",
    "data_sources": "2024-02-01",
    "logprobs": "2024-02-15-preview",
    "top_logprobs": "2024-02-15-preview",
    "stream_options": "2024-07-01-preview",
    "parallel_tool_calls": "2024-07-01-preview",
    "max_completion_tokens": "2024-09-01-preview",
    "store": "2024-10-01-preview",
    "metadata": "2024-10-01-preview",
    "reasoning_effort": "2024-12-01-preview",
    "prediction": "2025-01-01-preview",
    "modalities": "2025-01-01-preview",
    "audio": "2025-01-01-preview",
    "user_security_context": "2025-02-01-preview",
}

# Known to the version but not served here: refused as Azure refuses a parameter a model lacks.
# (name -> whether a value is harmless, e.g. ``store: false``.)
UNSUPPORTED_CHAT_ARGUMENTS: Mapping[str, Any] = {
    "data_sources": lambda v: v is None,
    "store": lambda v: v in (None, False),
    "metadata": lambda v: v is None,
    "reasoning_effort": lambda v: v is None,
    "prediction": lambda v: v is None,
    "modalities": lambda v: v in (None, ["text"]),
    "audio": lambda v: v is None,
    "user_security_context": lambda v: True,  # informational only (for Defender); nothing to do
}

COMPLETION_ARGUMENTS: Mapping[str, str] = {
    name: ALL
    for name in (
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "logit_bias",
        "user",
        "n",
        "stream",
        "logprobs",
        "model",
        "suffix",
        "echo",
        "stop",
        "completion_config",
        "cache_level",
        "presence_penalty",
        "frequency_penalty",
        "best_of",
    )
} | {"seed": "2023-12-01-preview", "stream_options": "2024-07-01-preview"}

EMBEDDING_ARGUMENTS: Mapping[str, str] = {
    "input": ALL,
    "user": ALL,
    "input_type": ALL,
    "model": ALL,
    # Both SDKs send encoding_format=base64 whatever the version, and Azure answers them: so it
    # is known everywhere, although the specs list it from 2024-03-01-preview.
    "encoding_format": ALL,
    "dimensions": "2024-03-01-preview",
}

_ROLES: tuple[tuple[str, str], ...] = (
    ("system", ALL),
    ("user", ALL),
    ("assistant", ALL),
    ("function", "2023-07-01-preview"),
    ("tool", "2023-12-01-preview"),
    ("developer", "2024-12-01-preview"),
)


def _known(since: str, version: ApiVersion) -> bool:
    return since == ALL or version.at_least(since)


def check_arguments(data: Mapping[str, Any], table: Mapping[str, str], version: ApiVersion) -> None:
    """Refuse fields ``version`` does not define, in the order they were sent."""
    unknown = [name for name in data if name not in table or not _known(table[name], version)]
    if not unknown:
        return
    if len(unknown) == 1:
        message = f"Unrecognized request argument supplied: {unknown[0]}"
    else:
        message = f"Unrecognized request arguments supplied: {', '.join(unknown)}"
    raise InvalidRequest(message)


def check_chat_values(data: Mapping[str, Any], version: ApiVersion) -> None:
    """Per-version values: roles, ``response_format`` types, and arguments not served here."""
    check_arguments(data, CHAT_ARGUMENTS, version)
    for name, harmless in UNSUPPORTED_CHAT_ARGUMENTS.items():
        if name in data and not harmless(data[name]):
            raise InvalidRequest(
                f"Unsupported parameter: '{name}' is not supported with this model.",
                param=name,
                code="unsupported_parameter",
            )
    roles = [role for role, since in _ROLES if _known(since, version)]
    messages = data.get("messages")
    for index, message in enumerate(messages if isinstance(messages, list) else ()):
        role = message.get("role") if isinstance(message, dict) else None
        if isinstance(role, str) and role not in roles:
            listed = ", ".join(repr(r) for r in roles)
            raise InvalidRequest(
                f"{role!r} is not one of [{listed}] - 'messages.{index}.role'",
                param=f"messages.{index}.role",
            )
    response_format = data.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_schema" and not version.at_least("2024-08-01-preview"):
        raise InvalidRequest(
            "Invalid value: 'json_schema'. Supported values are: 'text' and 'json_object'.",
            param="response_format.type",
        )
