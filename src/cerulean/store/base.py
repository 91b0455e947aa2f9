"""The storage interface services depend on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = ["DeploymentRecord", "Store"]


@dataclass(frozen=True)
class DeploymentRecord:
    """A deployment: a name clients use, bound to a model."""

    name: str
    model: str
    version: str
    capacity: int
    sku: str
    created_at: datetime


class Store(Protocol):
    """Keys and deployments; implementations must be safe to call from several threads."""

    def key_digests(self) -> dict[str, str]:
        """Stored key digests by key name (``key1``, ``key2``)."""
        ...

    def set_key_digest(self, name: str, digest: str) -> None:
        """Store (or replace) the digest of one account key."""
        ...

    def get_deployment(self, name: str) -> DeploymentRecord | None:
        """The deployment called ``name``, if any."""
        ...

    def list_deployments(self) -> list[DeploymentRecord]:
        """Every deployment, by name."""
        ...

    def put_deployment(self, record: DeploymentRecord) -> None:
        """Create or replace a deployment."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
