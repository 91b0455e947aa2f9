"""The storage interface services depend on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = [
    "DeploymentRecord",
    "ModelRecord",
    "ResponseRecord",
    "Store",
    "UpstreamRecord",
    "UsageRecord",
]


@dataclass(frozen=True)
class DeploymentRecord:
    """A deployment: a name clients use, bound to a model.

    ``upstreams`` names the remote engines that serve it (in order of registration); empty, the
    model is loaded in this process. ``builtin`` marks a deployment a server created that nobody
    has re-pointed since: only such a deployment follows the model a server runs.
    """

    name: str
    model: str
    version: str
    capacity: int
    sku: str
    created_at: datetime
    upstreams: tuple[str, ...] = ()
    builtin: bool = False


@dataclass(frozen=True)
class UpstreamRecord:
    """A remote inference server (``cerulean upstreams add``).

    The credential is never stored: only the name of the environment variable or the path of
    the file that holds it. ``profile`` is what the last probe found (JSON text).
    """

    name: str
    url: str
    flavor: str
    model: str | None
    api_key_env: str | None
    api_key_file: str | None
    max_concurrency: int | None
    weight: float
    created_at: datetime
    profile: str | None = None


@dataclass(frozen=True)
class ModelRecord:
    """A model in the catalog: an embedded one (no ``path``) or a registered GGUF file."""

    name: str
    path: str | None
    capabilities: tuple[str, ...]
    context_length: int | None
    chat_template: str | None
    created_at: datetime


@dataclass(frozen=True)
class UsageRecord:
    """What one deployment served in one minute (``minute`` is its start, UTC)."""

    deployment: str
    minute: datetime
    requests: int
    prompt_tokens: int
    completion_tokens: int
    throttled: int


@dataclass(frozen=True)
class ResponseRecord:
    """A stored Responses API response (docs/responses.md).

    ``body`` is the response object, ``input_items`` the items of its own input (with ids) and
    ``conversation`` every item the next turn's model reads (earlier turns, this input, this
    output), all JSON text. ``events`` are a background stream's events (for resumption);
    ``runner`` names the server process running a background response, which refreshes
    ``heartbeat`` while it runs (a run whose heartbeat stops was interrupted).
    """

    id: str
    deployment: str
    status: str
    created_at: datetime
    expires_at: datetime
    body: str
    input_items: str
    conversation: str
    events: str | None = None
    runner: str | None = None
    heartbeat: datetime | None = None


class Store(Protocol):
    """Keys, deployments, the model catalog and usage.

    Implementations must be safe to call from several threads.
    """

    def key_digests(self) -> dict[str, str]:
        """Stored key digests by key name (``key1``, ``key2``)."""
        ...

    def set_key_digest(self, name: str, digest: str) -> None:
        """Store (or replace) the digest of one account key."""
        ...

    def get_deployment(self, name: str) -> DeploymentRecord | None:
        """The deployment called ``name``, if any, matched case-insensitively as Azure's resource
        names are (the data plane then insists on the stored spelling: docs/deployments.md)."""
        ...

    def list_deployments(self) -> list[DeploymentRecord]:
        """Every deployment, by name."""
        ...

    def put_deployment(self, record: DeploymentRecord) -> None:
        """Create or replace a deployment."""
        ...

    def delete_deployment(self, name: str) -> bool:
        """Remove a deployment (``name`` matched case-insensitively); whether it existed."""
        ...

    def seeded_names(self) -> set[str]:
        """The built-in deployment names a server has created once (never again)."""
        ...

    def mark_seeded(self, name: str) -> None:
        """Record that built-in deployment ``name`` was created."""
        ...

    def get_upstream(self, name: str) -> UpstreamRecord | None:
        """The upstream called ``name``, if any."""
        ...

    def list_upstreams(self) -> list[UpstreamRecord]:
        """Every upstream, by name."""
        ...

    def put_upstream(self, record: UpstreamRecord) -> None:
        """Register (or replace) an upstream."""
        ...

    def delete_upstream(self, name: str) -> bool:
        """Remove an upstream; whether it existed."""
        ...

    def get_model(self, name: str) -> ModelRecord | None:
        """The catalog entry called ``name``, if any."""
        ...

    def list_models(self) -> list[ModelRecord]:
        """The catalog, by name."""
        ...

    def put_model(self, record: ModelRecord) -> None:
        """Register (or replace) a model."""
        ...

    def delete_model(self, name: str) -> bool:
        """Remove a model from the catalog; whether it was there."""
        ...

    def add_usage(
        self,
        deployment: str,
        minute: datetime,
        *,
        requests: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        throttled: int = 0,
    ) -> None:
        """Add to the counters of ``deployment`` for the minute starting at ``minute``."""
        ...

    def usage(self, deployment: str, since: datetime) -> list[UsageRecord]:
        """``deployment``'s minutes from the one holding ``since`` on, oldest first."""
        ...

    def put_response(self, record: ResponseRecord) -> None:
        """Store (or replace) a response."""
        ...

    def get_response(self, response_id: str, now: datetime) -> ResponseRecord | None:
        """The response ``response_id`` unless deleted or expired by ``now``."""
        ...

    def delete_response(self, response_id: str) -> bool:
        """Delete a response; whether it existed."""
        ...

    def purge_responses(self, now: datetime) -> int:
        """Delete the responses expired by ``now``; how many."""
        ...

    def touch_responses(self, runner: str, now: datetime) -> int:
        """Refresh the heartbeat of the queued or in-progress responses ``runner`` runs."""
        ...

    def stale_responses(self, before: datetime) -> list[ResponseRecord]:
        """The queued or in-progress responses whose heartbeat is older than ``before``."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
