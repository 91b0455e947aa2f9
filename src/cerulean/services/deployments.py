"""Deployments: names clients use, bound to models, each with a capacity (rate limits).

The CLI (``cerulean deployments``) and the management API (:mod:`cerulean.api.management`) both
call these functions; a refusal is a :class:`~cerulean.errors.ControlError` saying what to do.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timezone

from cerulean.errors import ControlError
from cerulean.services.filtering.manage import check_policy_name
from cerulean.services.filtering.policy import DEFAULT_POLICY
from cerulean.services.models import valid_model_name
from cerulean.store.base import DeploymentRecord, Store

__all__ = [
    "BUILTIN_CAPACITY",
    "BUILTIN_DEPLOYMENTS",
    "BUILTIN_EMBEDDING_DEPLOYMENTS",
    "DEFAULT_CAPACITY",
    "DEFAULT_SKU",
    "DEFAULT_VERSION",
    "MAX_CAPACITY",
    "SKUS",
    "assign_policy",
    "check_capacity",
    "check_deployment_name",
    "check_sku",
    "create_deployment",
    "delete_deployment",
    "ensure_builtin_deployments",
    "get_deployment",
    "put_deployment",
    "update_capacity",
    "update_model",
    "update_upstreams",
    "upstream_model",
]

# The names Azure's samples use, so they run unchanged (docs/deployments.md).
BUILTIN_DEPLOYMENTS = ("gpt-35-turbo", "gpt-4", "gpt-4o", "gpt-4o-mini")
BUILTIN_EMBEDDING_DEPLOYMENTS = ("text-embedding-ada-002", "text-embedding-3-small")
# Thousands of tokens per minute; far beyond what one machine generates, so never throttles.
BUILTIN_CAPACITY = 100_000
DEFAULT_CAPACITY = 120  # Azure's default for a new Standard deployment: 120K TPM
MAX_CAPACITY = 1_000_000
DEFAULT_SKU = "Standard"
DEFAULT_VERSION = "1"
# The token-metered deployment types; Cerulean limits all of them as Azure limits Standard.
# The batch types (GlobalBatch, DataZoneBatch) serve online requests too here; their capacity
# is also the enqueued-token quota of their batch jobs, in thousands (docs/batch.md).
SKUS = ("Standard", "GlobalStandard", "DataZoneStandard", "GlobalBatch", "DataZoneBatch")
_DEPLOYMENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{2,64}$")


def ensure_builtin_deployments(
    store: Store, model: str, version: str, names: tuple[str, ...] = BUILTIN_DEPLOYMENTS
) -> None:
    """Seed the built-in deployments ``names`` once, bound to ``model``.

    A name is created only the first time a server starts on the store (deleting it lasts);
    a built-in nobody has re-pointed follows the model the server runs (``serve --model``),
    while one a user re-pointed (``deployments update --model``, a create after a delete, an
    ARM PUT of another model) keeps the user's model.
    """
    seeded = store.seeded_names()
    for name in names:
        existing = store.get_deployment(name)
        if name not in seeded:
            if existing is None:
                store.put_deployment(
                    DeploymentRecord(
                        name=name,
                        model=model,
                        version=version,
                        capacity=BUILTIN_CAPACITY,
                        sku=DEFAULT_SKU,
                        created_at=datetime.now(timezone.utc),
                        builtin=True,
                    )
                )
            store.mark_seeded(name)
        elif (
            existing is not None
            and existing.builtin
            and not existing.upstreams
            and (existing.model, existing.version) != (model, version)
        ):
            store.put_deployment(replace(existing, model=model, version=version))


def check_deployment_name(name: str) -> None:
    """Azure's rule: 2 to 64 letters, digits, ``-``, ``_`` or ``.``."""
    if not _DEPLOYMENT_NAME.match(name):
        raise ControlError(
            f"'{name}' is not a valid deployment name: use 2 to 64 letters, digits, '-', '_' "
            "or '.' (e.g. my-gpt-4o)",
            reason="invalid",
            code="InvalidResourceName",
        )


def check_capacity(capacity: int) -> None:
    """Capacity is thousands of tokens per minute: 1 to :data:`MAX_CAPACITY`."""
    if not 1 <= capacity <= MAX_CAPACITY:
        raise ControlError(
            f"capacity {capacity} is out of range: give 1 to {MAX_CAPACITY} (thousands of "
            "tokens per minute; 120 allows 120,000 tokens and 720 requests a minute)",
            reason="invalid",
            code="InvalidCapacity",
        )


def check_sku(sku: str) -> str:
    """The SKU's canonical spelling (case-insensitive match), or a refusal naming the choices."""
    for known in SKUS:
        if known.lower() == sku.lower():
            return known
    raise ControlError(
        f"SKU '{sku}' is not supported here: use one of {', '.join(SKUS)} (provisioned "
        "throughput has no local meaning)",
        reason="invalid",
        code="InvalidSkuName",
    )


def get_deployment(store: Store, name: str) -> DeploymentRecord:
    """The deployment ``name``, or a not-found refusal."""
    record = store.get_deployment(name)
    if record is None:
        raise ControlError(
            f"no deployment called '{name}' (cerulean deployments list shows them)",
            reason="not_found",
            code="DeploymentNotFound",
        )
    return record


def assign_policy(store: Store, name: str, policy: str) -> tuple[DeploymentRecord, str]:
    """Make deployment ``name`` use content-filter ``policy`` (built-in or stored; the default
    policy is stored as none): the deployment and the policy's spelling."""
    record = get_deployment(store, name)
    spelled = check_policy_name(store, policy)
    store.put_deployment(replace(record, rai_policy=None if spelled == DEFAULT_POLICY else spelled))
    return record, spelled


def _check_model(store: Store, model: str) -> None:
    if store.get_model(model) is None:
        known = ", ".join(m.name for m in store.list_models()) or "none yet"
        if valid_model_name(model):
            hint = (
                f"Register a GGUF file under that name first: cerulean models add ./file.gguf "
                f"--name {model}"
            )
        else:  # `models add` would refuse this name: suggest only what works
            hint = (
                "Use one of those, or register a GGUF file under a name of letters, digits, "
                "'.', '_', ':' or '-': cerulean models add ./file.gguf --name NAME"
            )
        raise ControlError(
            f"model '{model}' is not in the catalog (known: {known}). {hint}",
            reason="invalid",
            code="DeploymentModelNotSupported",
        )


def upstream_model(store: Store, upstreams: tuple[str, ...]) -> str:
    """The model a deployment of ``upstreams`` reports: the first upstream's (its ``--model``,
    or the one model its probe found), else the upstream's name."""
    first = store.get_upstream(upstreams[0])
    return (first.model if first is not None else None) or upstreams[0]


def _check_upstreams(store: Store, upstreams: tuple[str, ...]) -> None:
    missing = [name for name in upstreams if store.get_upstream(name) is None]
    if missing:
        known = ", ".join(u.name for u in store.list_upstreams()) or "none yet"
        raise ControlError(
            f"no upstream called {', '.join(missing)} (known: {known}); register it first: "
            f"cerulean upstreams add {missing[0]} --url URL --flavor FLAVOR",
            reason="invalid",
            code="UpstreamNotFound",
        )
    if len(set(upstreams)) != len(upstreams):
        raise ControlError(
            "an upstream is named twice in --upstream", reason="invalid", code="InvalidValue"
        )


def put_deployment(
    store: Store,
    name: str,
    model: str | None,
    *,
    version: str | None = None,
    capacity: int | None = None,
    sku: str | None = None,
    upstreams: tuple[str, ...] | None = None,
    rai_policy: str | None = None,
) -> tuple[DeploymentRecord, bool]:
    """Create or replace deployment ``name``; the record and whether it was created.

    Values not given keep the existing deployment's, else the defaults (capacity 120, Standard).
    With ``upstreams`` the deployment is served by those remote engines (``model`` then names
    what it reports, by default the first upstream's model); without, by a catalog model.
    """
    check_deployment_name(name)
    existing = store.get_deployment(name)  # case-insensitive: PUT LIM1 updates lim1, as on Azure
    if existing is not None:
        name = existing.name  # the spelling it was created with stays
    if upstreams is None:
        same = existing is not None and model in (None, existing.model)
        upstreams = existing.upstreams if existing is not None and same else ()
    if upstreams:
        _check_upstreams(store, upstreams)
        model = model or upstream_model(store, upstreams)
    else:
        if model is None:
            raise ControlError(
                "give --model (a catalog model) or --upstream (remote engines)",
                reason="invalid",
                code="InvalidModel",
            )
        _check_model(store, model)
    capacity = capacity if capacity is not None else (existing.capacity if existing else None)
    capacity = DEFAULT_CAPACITY if capacity is None else capacity
    check_capacity(capacity)
    record = DeploymentRecord(
        name=name,
        model=model,
        version=version or (existing.version if existing else DEFAULT_VERSION),
        capacity=capacity,
        sku=check_sku(sku) if sku else (existing.sku if existing else DEFAULT_SKU),
        created_at=existing.created_at if existing else datetime.now(timezone.utc),
        upstreams=upstreams,
        # a built-in keeps following the served model only while nobody re-points it
        builtin=existing is not None
        and existing.builtin
        and (model, upstreams) == (existing.model, existing.upstreams),
    )
    if rai_policy is not None:  # "" names the default policy; None keeps the current one
        policy = check_policy_name(store, rai_policy) if rai_policy else None
        record = replace(record, rai_policy=None if policy == DEFAULT_POLICY else policy)
    elif existing is not None:
        record = replace(record, rai_policy=existing.rai_policy)
    store.put_deployment(record)
    return record, existing is None


def create_deployment(
    store: Store,
    name: str,
    model: str | None,
    *,
    version: str | None = None,
    capacity: int = DEFAULT_CAPACITY,
    sku: str = DEFAULT_SKU,
    upstreams: tuple[str, ...] = (),
) -> DeploymentRecord:
    """A new deployment; refused when the name is taken."""
    check_deployment_name(name)
    if store.get_deployment(name) is not None:
        raise ControlError(
            f"a deployment called '{name}' already exists; change it with cerulean deployments "
            f"update {name} --model M (or --capacity K), or delete it first",
            reason="conflict",
            code="Conflict",
        )
    record, _ = put_deployment(
        store, name, model, version=version, capacity=capacity, sku=sku, upstreams=upstreams
    )
    return record


def update_upstreams(store: Store, name: str, upstreams: tuple[str, ...]) -> DeploymentRecord:
    """Serve deployment ``name`` by ``upstreams`` from now on (its model name is kept)."""
    existing = get_deployment(store, name)
    _check_upstreams(store, upstreams)
    record = replace(existing, upstreams=upstreams, builtin=False)
    store.put_deployment(record)
    return record


def update_model(
    store: Store, name: str, model: str, *, version: str | None = None
) -> DeploymentRecord:
    """Re-point deployment ``name`` at catalog model ``model`` (capacity and SKU are kept).

    The change is the user's: a restart never binds the deployment back (built-ins included).
    """
    existing = get_deployment(store, name)
    _check_model(store, model)
    record = replace(
        existing,
        model=model,
        version=version or (existing.version if model == existing.model else DEFAULT_VERSION),
        upstreams=(),
        builtin=False,
    )
    store.put_deployment(record)
    return record


def update_capacity(store: Store, name: str, capacity: int) -> DeploymentRecord:
    """Change an existing deployment's capacity (its rate limits change at once)."""
    check_capacity(capacity)
    record = replace(get_deployment(store, name), capacity=capacity)
    store.put_deployment(record)
    return record


def delete_deployment(store: Store, name: str) -> DeploymentRecord:
    """Remove deployment ``name``; the record it had."""
    record = get_deployment(store, name)
    store.delete_deployment(record.name)
    return record
