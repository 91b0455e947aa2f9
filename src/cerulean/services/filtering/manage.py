"""Policies, blocklists and blocklist items: create, read, replace, delete (the ARM routes and
the CLI share these; every refusal is a :class:`~cerulean.errors.ControlError`)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from cerulean.errors import ControlError
from cerulean.services.filtering.classifiers import PatternError, check_pattern
from cerulean.services.filtering.policy import (
    BUILTIN_POLICIES,
    DEFAULT_POLICY,
    builtin,
    builtin_properties,
)
from cerulean.store.base import BlocklistItemRecord, BlocklistRecord, RaiPolicyRecord, Store

__all__ = [
    "MAX_ITEMS",
    "add_item",
    "arm_blocklist",
    "arm_item",
    "arm_policy",
    "check_policy_name",
    "delete_blocklist",
    "delete_item",
    "delete_policy",
    "get_blocklist",
    "get_item",
    "get_policy",
    "list_policies",
    "policy_users",
    "put_blocklist",
    "put_item",
    "put_policy",
]

MAX_ITEMS = 10_000  # items per blocklist (Azure's limit)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
POLICY_TYPE = "Microsoft.CognitiveServices/accounts/raiPolicies"
BLOCKLIST_TYPE = "Microsoft.CognitiveServices/accounts/raiBlocklists"
ITEM_TYPE = "Microsoft.CognitiveServices/accounts/raiBlocklists/raiBlocklistItems"


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise ControlError(
            f"The {what} name '{name}' is invalid: use 1 to 128 letters, digits, '_', '.' or "
            "'-', starting with a letter or digit.",
            reason="invalid",
            code="InvalidResourceName",
        )


def check_policy_name(store: Store, name: str) -> str:
    """The spelling of an existing policy ``name`` (built-in or stored), else a 400."""
    known = builtin(name)
    if known is not None:
        return known.name
    record = store.get_rai_policy(name)
    if record is None:
        raise ControlError(
            f"The RAI policy '{name}' does not exist. Create it first (PUT "
            f".../raiPolicies/{name}, or 'cerulean policies create'), or use one of "
            f"{', '.join(BUILTIN_POLICIES)}.",
            reason="invalid",
            code="InvalidRaiPolicy",
        )
    return record.name


def _stamp(created: datetime, updated: datetime) -> dict[str, str]:
    def iso(value: datetime) -> str:
        return value.isoformat().replace("+00:00", "Z")

    return {
        "createdBy": "cerulean",
        "createdByType": "User",
        "createdAt": iso(created),
        "lastModifiedBy": "cerulean",
        "lastModifiedByType": "User",
        "lastModifiedAt": iso(updated),
    }


# -- policies -------------------------------------------------------------------------------------


def arm_policy(name: str, properties: dict[str, Any], account_id: str) -> dict[str, Any]:
    return {
        "id": f"{account_id}/raiPolicies/{name}",
        "name": name,
        "type": POLICY_TYPE,
        "properties": properties,
    }


def get_policy(store: Store, name: str) -> tuple[str, dict[str, Any]]:
    """A policy's name and ARM properties (built-in ones too)."""
    known = builtin(name)
    if known is not None:
        return known.name, builtin_properties(known)
    record = store.get_rai_policy(name)
    if record is None:
        raise ControlError(
            f"The RAI policy '{name}' was not found.", reason="not_found", code="NotFound"
        )
    return record.name, {"type": "UserManaged", **json.loads(record.properties)}


def list_policies(store: Store) -> list[tuple[str, dict[str, Any]]]:
    out = [(p.name, builtin_properties(p)) for p in BUILTIN_POLICIES.values()]
    for record in store.list_rai_policies():
        out.append((record.name, {"type": "UserManaged", **json.loads(record.properties)}))
    return out


def policy_users(store: Store) -> dict[str, list[str]]:
    """The deployments using each policy, by the policy's name in lower case (a deployment
    without one uses the default policy)."""
    uses: dict[str, list[str]] = {}
    for deployment in store.list_deployments():
        uses.setdefault((deployment.rai_policy or DEFAULT_POLICY).lower(), []).append(
            deployment.name
        )
    return uses


def put_policy(store: Store, name: str, properties: dict[str, Any]) -> bool:
    """Create or replace a user policy from validated ARM ``properties``; whether it was new."""
    _check_name(name, "RAI policy")
    if builtin(name) is not None:
        raise ControlError(
            f"The RAI policy '{name}' is built in and cannot be changed.",
            reason="conflict",
            code="Conflict",
        )
    base = properties.get("basePolicyName")
    if base and builtin(base) is None:
        raise ControlError(
            f"The base policy '{base}' does not exist; use one of {', '.join(BUILTIN_POLICIES)}.",
            reason="invalid",
            code="InvalidRaiPolicy",
        )
    lists = [
        item["blocklistName"]
        for key in ("customBlocklists", "promptBlocklists", "completionBlocklists")
        for item in properties.get(key) or []
    ]
    for blocklist in lists:
        if store.get_blocklist(blocklist) is None:
            raise ControlError(
                f"The blocklist '{blocklist}' does not exist. Create it first "
                f"(PUT .../raiBlocklists/{blocklist}).",
                reason="invalid",
                code="InvalidBlocklist",
            )
    properties = {k: v for k, v in properties.items() if k != "type"}
    existing = store.get_rai_policy(name)
    now = datetime.now(timezone.utc)
    store.put_rai_policy(
        RaiPolicyRecord(
            name=existing.name if existing else name,
            properties=json.dumps(properties, sort_keys=True),
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )
    )
    return existing is None


def delete_policy(store: Store, name: str) -> bool:
    if builtin(name) is not None:
        raise ControlError(
            f"The RAI policy '{name}' is built in and cannot be deleted.",
            reason="conflict",
            code="Conflict",
        )
    users = [
        d.name for d in store.list_deployments() if (d.rai_policy or "").lower() == name.lower()
    ]
    if users:
        raise ControlError(
            f"The RAI policy '{name}' is used by deployment(s) {', '.join(users)}; point them "
            "at another policy first.",
            reason="conflict",
            code="Conflict",
        )
    return store.delete_rai_policy(name)


# -- blocklists -----------------------------------------------------------------------------------


def arm_blocklist(record: BlocklistRecord, account_id: str) -> dict[str, Any]:
    properties = {"description": record.description} if record.description is not None else {}
    return {
        "id": f"{account_id}/raiBlocklists/{record.name}",
        "name": record.name,
        "type": BLOCKLIST_TYPE,
        "systemData": _stamp(record.created_at, record.updated_at),
        "properties": properties,
    }


def arm_item(record: BlocklistItemRecord, account_id: str) -> dict[str, Any]:
    return {
        "id": f"{account_id}/raiBlocklists/{record.blocklist}/raiBlocklistItems/{record.name}",
        "name": record.name,
        "type": ITEM_TYPE,
        "systemData": _stamp(record.created_at, record.created_at),
        "properties": {"pattern": record.pattern, "isRegex": record.is_regex},
    }


def get_blocklist(store: Store, name: str) -> BlocklistRecord:
    record = store.get_blocklist(name)
    if record is None:
        raise ControlError(
            f"The blocklist '{name}' was not found.", reason="not_found", code="NotFound"
        )
    return record


def put_blocklist(store: Store, name: str, description: str | None) -> tuple[BlocklistRecord, bool]:
    _check_name(name, "blocklist")
    existing = store.get_blocklist(name)
    now = datetime.now(timezone.utc)
    record = BlocklistRecord(
        name=existing.name if existing else name,
        description=description,
        created_at=existing.created_at if existing else now,
        updated_at=now,
    )
    store.put_blocklist(record)
    return record, existing is None


def delete_blocklist(store: Store, name: str) -> bool:
    record = store.get_blocklist(name)
    if record is None:
        return False
    for policy in store.list_rai_policies():
        props = json.loads(policy.properties)
        named = {
            item.get("blocklistName", "").lower()
            for key in ("customBlocklists", "promptBlocklists", "completionBlocklists")
            for item in props.get(key) or []
        }
        if record.name.lower() in named:
            raise ControlError(
                f"The blocklist '{record.name}' is used by the RAI policy '{policy.name}'; "
                "remove it from the policy first.",
                reason="conflict",
                code="Conflict",
            )
    return store.delete_blocklist(record.name)


def get_item(store: Store, blocklist: str, name: str) -> BlocklistItemRecord:
    listed = get_blocklist(store, blocklist)
    for item in store.list_blocklist_items(listed.name):
        if item.name.lower() == name.lower():
            return item
    raise ControlError(
        f"The blocklist item '{name}' was not found in '{listed.name}'.",
        reason="not_found",
        code="NotFound",
    )


def put_item(
    store: Store, blocklist: str, name: str, pattern: str, is_regex: bool
) -> tuple[BlocklistItemRecord, bool]:
    """Create or replace an item (its pattern checked: length, RE2 syntax; the list's size)."""
    listed = get_blocklist(store, blocklist)
    _check_name(name, "blocklist item")
    try:
        check_pattern(pattern, is_regex)
    except PatternError as exc:
        raise ControlError(str(exc), reason="invalid", code="InvalidBlocklistItem") from None
    items = store.list_blocklist_items(listed.name)
    existing = next((i for i in items if i.name.lower() == name.lower()), None)
    if existing is None and len(items) >= MAX_ITEMS:
        raise ControlError(
            f"The blocklist '{listed.name}' already has {MAX_ITEMS} items, the most one list "
            "may hold.",
            reason="invalid",
            code="BlocklistItemLimitExceeded",
        )
    record = BlocklistItemRecord(
        blocklist=listed.name,
        name=existing.name if existing else name,
        pattern=pattern,
        is_regex=is_regex,
        created_at=existing.created_at if existing else datetime.now(timezone.utc),
    )
    store.put_blocklist_item(record)
    _touch(store, listed)
    return record, existing is None


def add_item(
    store: Store, blocklist: str, pattern: str, is_regex: bool, name: str | None = None
) -> BlocklistItemRecord:
    """Add ``pattern`` to ``blocklist`` as item ``name`` (by default the first free
    ``item-N``), checked as :func:`put_item` checks it."""
    listed = get_blocklist(store, blocklist)
    if name is None:
        taken = {i.name for i in store.list_blocklist_items(listed.name)}
        name = next(f"item-{n}" for n in range(1, len(taken) + 2) if f"item-{n}" not in taken)
    record, _ = put_item(store, listed.name, name, pattern, is_regex)
    return record


def delete_item(store: Store, blocklist: str, name: str) -> bool:
    listed = get_blocklist(store, blocklist)
    spelled = next(
        (i.name for i in store.list_blocklist_items(listed.name) if i.name.lower() == name.lower()),
        None,
    )
    if spelled is None:
        return False
    store.delete_blocklist_item(listed.name, spelled)
    _touch(store, listed)
    return True


def _touch(store: Store, record: BlocklistRecord) -> None:
    """Mark the list changed (its compiled form is rebuilt on next use)."""
    store.put_blocklist(
        BlocklistRecord(
            record.name, record.description, record.created_at, datetime.now(timezone.utc)
        )
    )
