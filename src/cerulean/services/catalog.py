"""The model and deployment objects of Azure's listing routes (wire reference §1.3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cerulean.engines.base import Engine
from cerulean.engines.embedding import EmbeddingEngine
from cerulean.protocol.apiversions import ApiVersion
from cerulean.protocol.capabilities import NAMES
from cerulean.store.base import DeploymentRecord

__all__ = ["deployment_object", "model_object", "model_objects"]

Served = Engine | EmbeddingEngine

# Azure reports when a model stops being served; local models never are. A date far ahead keeps
# clients that compare it with "now" happy (2099-12-31T00:00:00Z).
_NEVER = 4102358400


def _capabilities(engine: Served, version: ApiVersion) -> dict[str, Any]:
    kinds = engine.info.capabilities
    capabilities: dict[str, Any] = {"fine_tune": False, "inference": True}
    for capability in ("completion", "chat_completion", "embeddings"):
        capabilities[NAMES[capability].model_object] = capability in kinds
    if not version.at_least("2023-05-15"):  # the 2022 authoring shape
        del capabilities["chat_completion"]
        capabilities["scale_types"] = ["standard"]
    return capabilities


def model_object(engine: Served, version: ApiVersion, created_at: int) -> dict[str, Any]:
    """One model: what it can do, in the shape of the requested api-version."""
    body: dict[str, Any] = {
        "object": "model",
        "id": engine.info.name,
        "status": "succeeded",
        "created_at": created_at,
        "capabilities": _capabilities(engine, version),
        "deprecation": {"inference": _NEVER},
    }
    if version.at_least("2023-05-15"):
        body["lifecycle_status"] = "generally-available"
    else:
        body["updated_at"] = created_at
    return body


def model_objects(
    engines: Mapping[str, Served], version: ApiVersion, created_at: int
) -> list[dict[str, Any]]:
    """Every model this server can serve."""
    return [model_object(engine, version, created_at) for engine in engines.values()]


def deployment_object(record: DeploymentRecord) -> dict[str, Any]:
    """A deployment in the 2022-12-01 data-plane shape."""
    created = int(record.created_at.timestamp())
    return {
        "object": "deployment",
        "id": record.name,
        "model": record.model,
        "owner": "organization-owner",
        "status": "succeeded",
        "scale_settings": {"scale_type": "standard"},
        "created_at": created,
        "updated_at": created,
    }
