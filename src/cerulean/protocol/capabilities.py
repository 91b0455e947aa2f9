"""What a model can do, in one vocabulary, and every name Azure gives each capability.

The store, engines and services speak only :data:`Capability` (the keys of Azure's data-plane
model object, ``capabilities.chat_completion`` and so on). Each wire surface names the same idea
differently; :data:`NAMES` is the one table that maps them:

- ``chat_completion``: ARM ``chatCompletion``, OperationNotSupported ``chatCompletion``,
  429 operation ``ChatCompletions_Create``;
- ``completion``: ARM ``completion``, ``completion``, ``Completions_Create``;
- ``embeddings``: ARM ``embeddings``, ``embeddings``, ``Embeddings_Create``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "CHAT_CAPABILITIES",
    "EMBEDDING_CAPABILITIES",
    "NAMES",
    "Capability",
    "CapabilityNames",
    "parse_capabilities",
]

Capability = Literal["chat_completion", "completion", "embeddings"]

CHAT_CAPABILITIES: frozenset[Capability] = frozenset({"chat_completion", "completion"})
EMBEDDING_CAPABILITIES: frozenset[Capability] = frozenset({"embeddings"})


@dataclass(frozen=True)
class CapabilityNames:
    """How each Azure surface names one capability."""

    model_object: str  # key in ``capabilities`` of /openai/models objects
    arm: str  # key in ``properties.capabilities`` of an ARM deployment
    operation: str  # the operation OperationNotSupported names
    operation_id: str  # the operation a rate-limit 429 names (§5.3)


NAMES: dict[Capability, CapabilityNames] = {
    "chat_completion": CapabilityNames(
        "chat_completion", "chatCompletion", "chatCompletion", "ChatCompletions_Create"
    ),
    "completion": CapabilityNames("completion", "completion", "completion", "Completions_Create"),
    "embeddings": CapabilityNames("embeddings", "embeddings", "embeddings", "Embeddings_Create"),
}

# Spellings older stores hold (the control plane once wrote "chat" and "completions"); read as
# the capability they meant. Migration 0003 rewrites them in place.
_LEGACY: dict[str, Capability] = {"chat": "chat_completion", "completions": "completion"}
_KNOWN: frozenset[str] = frozenset(get_args(Capability))


def parse_capabilities(stored: Iterable[str]) -> frozenset[Capability]:
    """Stored capability names as :data:`Capability` values; unknown names are dropped."""
    out: set[Capability] = set()
    for name in stored:
        if name in _LEGACY:
            out.add(_LEGACY[name])
        elif name in _KNOWN:
            out.add(name)  # type: ignore[arg-type]  # narrowed by the membership test
    return frozenset(out)
