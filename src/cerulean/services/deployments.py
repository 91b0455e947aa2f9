"""Deployments: names clients use, bound to models."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

from cerulean.store.base import DeploymentRecord, Store

__all__ = [
    "BUILTIN_CAPACITY",
    "BUILTIN_DEPLOYMENTS",
    "BUILTIN_EMBEDDING_DEPLOYMENTS",
    "ensure_builtin_deployments",
]

BUILTIN_DEPLOYMENTS = ("gpt-35-turbo", "gpt-4")
BUILTIN_EMBEDDING_DEPLOYMENTS = ("text-embedding-ada-002",)
# Thousands of tokens per minute; far beyond what one machine generates, so never throttles.
BUILTIN_CAPACITY = 100_000


def ensure_builtin_deployments(
    store: Store, model: str, version: str, names: tuple[str, ...] = BUILTIN_DEPLOYMENTS
) -> None:
    """Create the default deployments ``names``, or re-bind them to the model being served."""
    for name in names:
        existing = store.get_deployment(name)
        if existing is None:
            store.put_deployment(
                DeploymentRecord(
                    name=name,
                    model=model,
                    version=version,
                    capacity=BUILTIN_CAPACITY,
                    sku="Standard",
                    created_at=datetime.now(timezone.utc),
                )
            )
        elif (existing.model, existing.version) != (model, version):
            store.put_deployment(replace(existing, model=model, version=version))
