"""The storage interface services depend on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = [
    "BlocklistItemRecord",
    "BlocklistRecord",
    "DeploymentRecord",
    "ModelRecord",
    "RaiPolicyRecord",
    "ResponseRecord",
    "RoleAssignmentRecord",
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
    rai_policy: str | None = None  # the content-filter policy it names; None: the default


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
    """What one caller's requests of one operation on one deployment, answered with one status,
    added up to in one minute (``minute`` is its start, UTC).

    ``caller`` is ``key1``, ``key2``, an Entra principal id, or ``""`` (unknown). Latencies are
    sums in seconds: ``ttft_sum`` over the ``ttft_count`` requests that produced output (the
    mean TTFT is their ratio), ``duration_sum`` over ``requests``; ``duration_max`` is the
    slowest request's.
    """

    minute: datetime
    deployment: str
    caller: str = ""
    operation: str = ""
    status: int = 200
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    throttled: int = 0  # refused by the deployment's rate limits (429)
    ttft_sum: float = 0.0
    ttft_count: int = 0
    duration_sum: float = 0.0
    duration_max: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


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


@dataclass(frozen=True)
class RoleAssignmentRecord:
    """A built-in role (its Azure role definition id) held by a principal (a token's ``oid``,
    lower case) on the account."""

    principal_id: str
    role_id: str
    created_at: datetime


@dataclass(frozen=True)
class RaiPolicyRecord:
    """A content-filter policy: its ARM ``properties`` as JSON text (docs/content-filtering.md)."""

    name: str
    properties: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class BlocklistRecord:
    """A custom blocklist (``raiBlocklists``)."""

    name: str
    description: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class BlocklistItemRecord:
    """One term of a blocklist: an exact phrase, or a regular expression (RE2 syntax)."""

    blocklist: str
    name: str
    pattern: str
    is_regex: bool
    created_at: datetime


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

    @property
    def deployment_writes(self) -> int:
        """How many deployment writes this process has made (through any store): a reader that
        caches deployments drops its copies when it changes."""
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

    def add_usage(self, rows: Sequence[UsageRecord]) -> None:
        """Add ``rows`` to the stored minutes (in one transaction): counters and sums add up,
        ``duration_max`` keeps the larger; ``minute`` is cut down to its minute."""
        ...

    def usage(
        self,
        since: datetime,
        *,
        until: datetime | None = None,
        deployment: str | None = None,
        caller: str | None = None,
    ) -> list[UsageRecord]:
        """The stored minutes from the one holding ``since`` to before ``until``, oldest first,
        of one deployment and one caller when given."""
        ...

    def prune_usage(self, before: datetime) -> int:
        """Delete the minutes before ``before`` (the retention); how many rows went."""
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

    def list_role_assignments(self) -> list[RoleAssignmentRecord]:
        """Every role assignment, by principal then role."""
        ...

    def add_role_assignment(self, principal_id: str, role_id: str) -> bool:
        """Give ``principal_id`` the role ``role_id``; whether it was new."""
        ...

    def remove_role_assignment(self, principal_id: str, role_id: str) -> bool:
        """Take the role away; whether the principal held it."""
        ...

    def account_properties(self) -> dict[str, str]:
        """The account's stored ARM properties (JSON text values), by name."""
        ...

    def set_account_property(self, name: str, value: str) -> None:
        """Set one account property (``value`` is JSON text)."""
        ...

    def get_rai_policy(self, name: str) -> RaiPolicyRecord | None:
        """Policy ``name`` (case-insensitive), or None."""
        ...

    def list_rai_policies(self) -> list[RaiPolicyRecord]:
        """Every stored policy, by name."""
        ...

    def put_rai_policy(self, record: RaiPolicyRecord) -> None:
        """Create or replace a policy."""
        ...

    def delete_rai_policy(self, name: str) -> bool:
        """Delete a policy; whether it existed."""
        ...

    def get_blocklist(self, name: str) -> BlocklistRecord | None:
        """Blocklist ``name`` (case-insensitive), or None."""
        ...

    def list_blocklists(self) -> list[BlocklistRecord]:
        """Every blocklist, by name."""
        ...

    def put_blocklist(self, record: BlocklistRecord) -> None:
        """Create or replace a blocklist (its items stay)."""
        ...

    def delete_blocklist(self, name: str) -> bool:
        """Delete a blocklist and its items; whether it existed."""
        ...

    def list_blocklist_items(self, blocklist: str) -> list[BlocklistItemRecord]:
        """The items of ``blocklist``, by name."""
        ...

    def put_blocklist_item(self, record: BlocklistItemRecord) -> None:
        """Create or replace an item."""
        ...

    def delete_blocklist_item(self, blocklist: str, name: str) -> bool:
        """Delete an item; whether it existed."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
