"""Azure role-based access control for Entra ID principals: built-in roles, the data action
or action each request needs, and the role assignments (``cerulean roles``).

The three built-in roles (docs ``how-to/role-based-access-control.md``), with Azure's role
definition ids:

- *Cognitive Services OpenAI User*: inference (the OpenAI data actions of inference and reads),
  and reading the resource and its deployments on the management API;
- *Cognitive Services OpenAI Contributor*: every OpenAI data action (inference, files and
  uploads), and deployments on the management API (create, change, delete);
- *Cognitive Services Contributor*: the whole management API (keys, deployments, account
  properties, content-filter policies), but **no data action**: no inference with a token.

A data-plane request needs the data action of its operation (:func:`data_action`), e.g.
``Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action``; a
management request the action of its route (:func:`arm_action`), e.g.
``Microsoft.CognitiveServices/accounts/listKeys/action``. Patterns are matched as Azure does:
case-insensitively, ``*`` matching any run of characters.

:class:`RoleAssignments` is a server's copy of the assignments, re-read from the store every
``ttl`` seconds and again when a principal lacks a permission (a role assigned by the CLI
works at once; a removed one stops within ``ttl``); in-process changes call ``reload``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from starlette.concurrency import run_in_threadpool

from cerulean.errors import ControlError
from cerulean.store.base import Store

__all__ = [
    "ROLES",
    "RoleAssignments",
    "RoleDefinition",
    "arm_action",
    "assign_role",
    "check_principal",
    "data_action",
    "find_role",
    "remove_role",
    "role_by_id",
]

PROVIDER = "Microsoft.CognitiveServices"
MAX_PRINCIPAL = 128  # characters of a principal id (an object id is 36)
OPENAI = f"{PROVIDER}/accounts/OpenAI"


@dataclass(frozen=True)
class RoleDefinition:
    """A built-in role: its name, Azure's role definition id, and what it permits."""

    name: str
    id: str
    description: str
    actions: tuple[str, ...]
    data_actions: tuple[str, ...]

    def permits(self, action: str, *, data: bool) -> bool:
        patterns = self.data_actions if data else self.actions
        return any(_pattern(p).fullmatch(action) for p in patterns)


_INFERENCE = tuple(
    f"{OPENAI}/{path}"
    for path in (
        "*/read",
        "deployments/chat/completions/action",
        "deployments/completions/action",
        "deployments/embeddings/action",
        "deployments/extensions/chat/completions/action",
        "deployments/search/action",
        "deployments/audio/action",
        "images/generations/action",
        "responses/*",
        "assistants/*",
    )
)

ROLES: tuple[RoleDefinition, ...] = (
    RoleDefinition(
        name="Cognitive Services OpenAI User",
        id="5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
        description="Inference with Entra ID; reads the resource and its deployments.",
        actions=(f"{PROVIDER}/*/read",),
        data_actions=_INFERENCE,
    ),
    RoleDefinition(
        name="Cognitive Services OpenAI Contributor",
        id="a001fd3d-188f-4b5d-821b-7da978bf7442",
        description="OpenAI User, plus deployments, fine-tuning and uploads.",
        actions=(f"{PROVIDER}/*/read", f"{PROVIDER}/accounts/deployments/*"),
        data_actions=(f"{OPENAI}/*",),
    ),
    RoleDefinition(
        name="Cognitive Services Contributor",
        id="25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68",
        description="The management API (keys, deployments, policies); no Entra inference.",
        actions=(f"{PROVIDER}/*",),
        data_actions=(),
    ),
)


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.IGNORECASE)


def role_by_id(role_id: str) -> RoleDefinition | None:
    """The built-in role of a role definition id (case-insensitive)."""
    return next((r for r in ROLES if r.id == role_id.lower()), None)


def find_role(name_or_id: str) -> RoleDefinition:
    """A built-in role by its name (case-insensitive) or its role definition id."""
    wanted = name_or_id.strip().lower()
    for role in ROLES:
        if wanted in (role.name.lower(), role.id):
            return role
    names = ", ".join(f"'{r.name}'" for r in ROLES)
    raise ControlError(
        f"'{name_or_id}' is not a role Cerulean knows: use one of {names} (or its id)",
        reason="invalid",
        code="RoleDefinitionDoesNotExist",
    )


def check_principal(value: str) -> str:
    """A principal id as stored (trimmed, lower case), else a 400."""
    principal = value.strip().lower()
    if not principal or len(principal) > MAX_PRINCIPAL or any(c.isspace() for c in principal):
        raise ControlError(
            f"'{value}' is not a principal id: give the object id (oid) of a user, group, "
            "service principal or managed identity",
            reason="invalid",
            code="InvalidPrincipalId",
        )
    return principal


def assign_role(store: Store, principal_id: str, role: str) -> tuple[str, RoleDefinition, bool]:
    """Give ``principal_id`` the built-in ``role`` (its name or id): the principal as stored,
    the role, and whether the assignment is new (``cerulean roles assign``, the Studio)."""
    definition = find_role(role)
    principal = check_principal(principal_id)
    return principal, definition, store.add_role_assignment(principal, definition.id)


def remove_role(store: Store, principal_id: str, role: str) -> tuple[str, RoleDefinition]:
    """Take the built-in ``role`` away from ``principal_id``; a 404 when it did not hold it."""
    definition = find_role(role)
    principal = check_principal(principal_id)
    if not store.remove_role_assignment(principal, definition.id):
        raise ControlError(
            f"{principal} does not hold '{definition.name}'",
            reason="not_found",
            code="RoleAssignmentNotFound",
        )
    return principal, definition


# Collections whose next path segment is a resource's id, not an operation.
_ID_AFTER = frozenset({"deployments", "models", "files", "batches", "responses", "jobs"})
# v1 operations that act on a deployment named in the body.
_DEPLOYMENT_OPERATIONS = ("chat/completions", "completions", "embeddings", "audio/", "images/")
_VERBS = {"GET": "read", "HEAD": "read", "DELETE": "delete", "PUT": "write", "PATCH": "write"}


def data_action(method: str, path: str) -> tuple[str, str]:
    """The data action a data-plane request needs, and the operation as Azure names it
    (``POST /openai/deployments/{deployment-id}/chat/completions``)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["openai"]:
        parts = parts[1:]
    shown = ["openai"]
    if parts[:1] == ["v1"]:
        parts = parts[1:]
        shown.append("v1")
    kept: list[str] = []
    for index, part in enumerate(parts):
        if index > 0 and parts[index - 1] in _ID_AFTER:
            shown.append("{deployment-id}" if parts[index - 1] == "deployments" else "{id}")
            continue
        kept.append(part)
        shown.append(part)
    rest = "/".join(kept)
    if "v1" in shown and rest.startswith(_DEPLOYMENT_OPERATIONS):
        rest = "deployments/" + rest
    verb = "action" if method.upper() == "POST" else _VERBS.get(method.upper(), "action")
    action = f"{OPENAI}/{rest}/{verb}" if rest else f"{OPENAI}/{verb}"
    return action, f"{method.upper()} /{'/'.join(shown)}"


def arm_action(method: str, tail: str) -> str:
    """The action a management request needs; ``tail`` is the path after the account's
    (``/deployments/gpt-4``, ``/listKeys``, ``""`` for the account itself)."""
    parts = [p for p in tail.split("/") if p]
    collections = parts[0::2]  # /deployments/{name}/... : every other segment is a type
    upper = method.upper()
    if upper == "POST":
        return "/".join([f"{PROVIDER}/accounts", *collections]) + "/action"
    verb = _VERBS.get(upper, "action")
    return "/".join([f"{PROVIDER}/accounts", *collections, verb])


class RoleAssignments:
    """A server's copy of the role assignments, kept fresh from the store (see the module)."""

    def __init__(
        self,
        store: Store,
        *,
        ttl: float,
        retry_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._retry_interval = retry_interval
        self._clock = clock
        self._roles: dict[str, frozenset[RoleDefinition]] = {}
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def permits(self, principal: str, action: str, *, data: bool) -> bool:
        """Whether ``principal`` holds a role that permits ``action`` (a data action if
        ``data``); a refusal re-reads the assignments once before it stands."""
        await self._refresh(self._ttl)
        if self._allowed(principal, action, data):
            return True
        return await self._refresh(self._retry_interval) and self._allowed(principal, action, data)

    def _allowed(self, principal: str, action: str, data: bool) -> bool:
        return any(r.permits(action, data=data) for r in self._roles.get(principal, ()))

    async def _refresh(self, limit: float) -> bool:
        asked = self._clock()
        if self._read_at is not None and asked - self._read_at < limit:
            return False
        async with self._lock:
            if self._read_at is not None and self._read_at > asked:
                return True  # a read that began after this request asked: fresh enough
            await self._read()
        return True

    async def reload(self) -> None:
        """Re-read now (after this process changed an assignment)."""
        async with self._lock:
            await self._read()

    async def _read(self) -> None:
        began = self._clock()
        records = await run_in_threadpool(self._store.list_role_assignments)
        self._roles = _by_principal((r.principal_id, r.role_id) for r in records)
        self._read_at = began


def _by_principal(pairs: Iterable[tuple[str, str]]) -> dict[str, frozenset[RoleDefinition]]:
    grouped: dict[str, set[RoleDefinition]] = {}
    for principal, role_id in pairs:
        role = role_by_id(role_id)
        if role is not None:
            grouped.setdefault(principal.lower(), set()).add(role)
    return {p: frozenset(r) for p, r in grouped.items()}
