"""The management plane in Azure Resource Manager's shapes (wire reference §9).

``/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.CognitiveServices/accounts/{a}/…``:
deployments (PUT, GET, DELETE, list), keys (listKeys, regenerateKey), usages and the account
itself (GET, PATCH/PUT of ``disableLocalAuth``), so that the management SDKs and ARM tooling work
against Cerulean. Authorised by the admin token (``CERULEAN_ADMIN_TOKEN`` as ``Authorization:
Bearer``) or by an Entra ID token for the management audience whose principal holds a role with
the route's action (:mod:`cerulean.services.rbac`), never by account keys; any subscription and
resource group is accepted, the account must be ``settings.account_name``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cerulean.api.deps import StateDep
from cerulean.errors import ArmError, ControlError
from cerulean.protocol.management import (
    Account as AccountBody,
)
from cerulean.protocol.management import (
    Deployment,
    RaiBlocklist,
    RaiBlocklistItem,
    RaiBlocklistItemBulk,
    RaiPolicy,
    RegenerateKeyParameters,
    parse_arm_body,
)
from cerulean.services import deployments as deployment_service
from cerulean.services.account import arm_account, set_local_auth
from cerulean.services.auth import bearer_token
from cerulean.services.entra import looks_like_jwt
from cerulean.services.filtering import manage as filters
from cerulean.services.keys import KEY_NAMES, readable_keys, regenerate_key
from cerulean.services.management import (
    arm_deployment,
    arm_error,
    arm_usages,
    check_arm_api_version,
    usage_filter,
)
from cerulean.state import AppState
from cerulean.store.base import Store

__all__ = ["PREFIX", "router"]

PREFIX = "/subscriptions/"
ACCOUNT = (
    "/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
    "/providers/Microsoft.CognitiveServices/accounts/{account_name}"
)
T = TypeVar("T")

router = APIRouter()


async def _authorize(request: Request, state: AppState, scope: str, tail: str) -> None:
    """The admin token, or (where an Entra issuer is trusted) a management-audience token whose
    principal holds a role with the route's action; else ARM's 401 or 403."""
    token = state.settings.admin_token
    expected = token.get_secret_value() if token is not None else ""
    entra = state.entra
    if not expected and entra is None:
        raise ArmError(
            403,
            "AuthorizationFailed",
            "The management API is disabled on this server. To enable it, set "
            "CERULEAN_ADMIN_TOKEN to a long random secret, restart the server, and send "
            "'Authorization: Bearer <that secret>' (or trust an Entra ID issuer: "
            "docs/entra-id.md).",
        )
    given = bearer_token(request.headers)
    if given is None:
        raise ArmError(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing or is not a Bearer "
            "token; send 'Authorization: Bearer <CERULEAN_ADMIN_TOKEN>' or an Entra ID token.",
        )
    if expected and hmac.compare_digest(given.encode(), expected.encode()):
        return
    if entra is not None and looks_like_jwt(given):
        await entra.management(given, request.method, tail, scope)
        return
    raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.")


class Account:
    """A checked management request: the admin token, ``api-version`` and account are valid."""

    def __init__(self, state: AppState, account_id: str) -> None:
        self.state = state
        self.store: Store = state.store
        self.id = account_id

    async def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking service call; its refusal becomes ARM's error."""
        try:
            return await run_in_threadpool(func, *args, **kwargs)
        except ControlError as exc:
            raise arm_error(exc) from None

    async def deployment(self, name: str) -> dict[str, Any]:
        record = await self.call(deployment_service.get_deployment, self.store, name)
        model = await run_in_threadpool(self.store.get_model, record.model)
        return arm_deployment(record, model, self.id)

    async def reconcile(self) -> None:
        await self.state.pool.reconcile()

    async def resource(self, request: Request) -> dict[str, Any]:
        endpoint = str(request.base_url)
        return await run_in_threadpool(
            arm_account, self.state.settings, self.store, self.id, endpoint
        )


async def get_account(
    request: Request, state: StateDep, subscription_id: str, resource_group: str, account_name: str
) -> Account:
    path = request.url.path
    marker = f"/accounts/{account_name}"
    tail = path[path.find(marker) + len(marker) :] if marker in path else ""
    scope = (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.CognitiveServices/accounts/{account_name}"
    )
    await _authorize(request, state, scope, tail)
    check_arm_api_version(request.query_params.get("api-version"))
    if account_name.lower() != state.settings.account_name.lower():
        raise ArmError(
            404,
            "ResourceNotFound",
            f"The Resource 'Microsoft.CognitiveServices/accounts/{account_name}' under resource "
            f"group '{resource_group}' was not found. This server's account is "
            f"'{state.settings.account_name}' (CERULEAN_ACCOUNT_NAME).",
        )
    account_id = (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.CognitiveServices/accounts/{state.settings.account_name}"
    )
    return Account(state, account_id)


AccountDep = Annotated[Account, Depends(get_account)]


@router.get(ACCOUNT)
async def get_account_resource(request: Request, account: AccountDep) -> dict[str, Any]:
    return await account.resource(request)


@router.patch(ACCOUNT)
@router.put(ACCOUNT)
async def update_account(request: Request, account: AccountDep) -> dict[str, Any]:
    """PATCH (``accounts.begin_update``) or PUT: the properties Cerulean keeps
    (``disableLocalAuth``); the others are accepted and ignored, as the account exists."""
    body: AccountBody = parse_arm_body(await request.body(), AccountBody)
    disabled = body.properties.disable_local_auth if body.properties is not None else None
    if disabled is not None:
        await run_in_threadpool(set_local_auth, account.store, disabled=disabled)
        await account.state.keyring.reload()  # keys stop (or start) working now
    return await account.resource(request)


@router.get(ACCOUNT + "/deployments")
async def list_deployments(account: AccountDep) -> dict[str, Any]:
    records = await run_in_threadpool(account.store.list_deployments)
    models = {m.name: m for m in await run_in_threadpool(account.store.list_models)}
    return {"value": [arm_deployment(r, models.get(r.model), account.id) for r in records]}


@router.get(ACCOUNT + "/deployments/{deployment_name}")
async def get_deployment(account: AccountDep, deployment_name: str) -> dict[str, Any]:
    return await account.deployment(deployment_name)


@router.put(ACCOUNT + "/deployments/{deployment_name}")
async def put_deployment(
    request: Request, account: AccountDep, deployment_name: str
) -> JSONResponse:
    body: Deployment = parse_arm_body(await request.body(), Deployment)
    model = body.properties.model
    _, created = await account.call(
        deployment_service.put_deployment,
        account.store,
        deployment_name,
        model.name,
        version=model.version,
        capacity=body.capacity,
        sku=body.sku.name if body.sku is not None else None,
        upstreams=tuple(body.properties.upstreams) if body.properties.upstreams else None,
        rai_policy=body.properties.rai_policy_name or "",
    )
    await account.reconcile()  # loads the model now (and unloads one no longer deployed)
    resource = await account.deployment(deployment_name)
    return JSONResponse(resource, status_code=201 if created else 200)


@router.delete(ACCOUNT + "/deployments/{deployment_name}")
async def delete_deployment(account: AccountDep, deployment_name: str) -> Response:
    existed = await run_in_threadpool(account.store.delete_deployment, deployment_name)
    await account.reconcile()  # unloads its model if no other deployment uses it
    return Response(status_code=200 if existed else 204)


@router.post(ACCOUNT + "/listKeys")
async def list_keys(account: AccountDep) -> dict[str, str | None]:
    known = await run_in_threadpool(readable_keys, account.store, account.state.settings)
    return {name: known.get(name) for name in KEY_NAMES}


@router.post(ACCOUNT + "/regenerateKey")
async def regenerate(request: Request, account: AccountDep) -> dict[str, str | None]:
    body: RegenerateKeyParameters = parse_arm_body(await request.body(), RegenerateKeyParameters)
    name = body.key_name.lower()
    settings = account.state.settings
    key = await account.call(regenerate_key, account.store, settings, name)
    await account.state.keyring.reload()  # the old key stops working now
    known = await run_in_threadpool(readable_keys, account.store, settings)
    known[name] = key
    return {n: known.get(n) for n in KEY_NAMES}


# -- content filtering: raiPolicies, raiBlocklists, raiBlocklistItems ----------------------------


def _changed(account: Account) -> None:
    """A policy or blocklist changed: this server applies it to the next request."""
    account.state.content_safety.invalidate()


@router.get(ACCOUNT + "/raiPolicies")
async def list_rai_policies(account: AccountDep) -> dict[str, Any]:
    policies = await account.call(filters.list_policies, account.store)
    return {"value": [filters.arm_policy(n, p, account.id) for n, p in policies]}


@router.get(ACCOUNT + "/raiPolicies/{policy_name}")
async def get_rai_policy(account: AccountDep, policy_name: str) -> dict[str, Any]:
    name, properties = await account.call(filters.get_policy, account.store, policy_name)
    return filters.arm_policy(name, properties, account.id)


@router.put(ACCOUNT + "/raiPolicies/{policy_name}")
async def put_rai_policy(request: Request, account: AccountDep, policy_name: str) -> JSONResponse:
    body: RaiPolicy = parse_arm_body(await request.body(), RaiPolicy)
    properties = body.properties.model_dump(by_alias=True, exclude_none=True, exclude_unset=True)
    created = await account.call(filters.put_policy, account.store, policy_name, properties)
    _changed(account)
    name, stored = await account.call(filters.get_policy, account.store, policy_name)
    return JSONResponse(
        filters.arm_policy(name, stored, account.id), status_code=201 if created else 200
    )


@router.delete(ACCOUNT + "/raiPolicies/{policy_name}")
async def delete_rai_policy(account: AccountDep, policy_name: str) -> Response:
    existed = await account.call(filters.delete_policy, account.store, policy_name)
    _changed(account)
    return Response(status_code=200 if existed else 204)


@router.get(ACCOUNT + "/raiBlocklists")
async def list_blocklists(account: AccountDep) -> dict[str, Any]:
    records = await run_in_threadpool(account.store.list_blocklists)
    return {"value": [filters.arm_blocklist(r, account.id) for r in records]}


@router.get(ACCOUNT + "/raiBlocklists/{blocklist_name}")
async def get_blocklist(account: AccountDep, blocklist_name: str) -> dict[str, Any]:
    record = await account.call(filters.get_blocklist, account.store, blocklist_name)
    return filters.arm_blocklist(record, account.id)


@router.put(ACCOUNT + "/raiBlocklists/{blocklist_name}")
async def put_blocklist(request: Request, account: AccountDep, blocklist_name: str) -> JSONResponse:
    body: RaiBlocklist = parse_arm_body(await request.body(), RaiBlocklist)
    record, created = await account.call(
        filters.put_blocklist, account.store, blocklist_name, body.properties.description
    )
    _changed(account)
    return JSONResponse(
        filters.arm_blocklist(record, account.id), status_code=201 if created else 200
    )


@router.delete(ACCOUNT + "/raiBlocklists/{blocklist_name}")
async def delete_blocklist(account: AccountDep, blocklist_name: str) -> Response:
    existed = await account.call(filters.delete_blocklist, account.store, blocklist_name)
    _changed(account)
    return Response(status_code=200 if existed else 204)


@router.get(ACCOUNT + "/raiBlocklists/{blocklist_name}/raiBlocklistItems")
async def list_blocklist_items(account: AccountDep, blocklist_name: str) -> dict[str, Any]:
    record = await account.call(filters.get_blocklist, account.store, blocklist_name)
    items = await run_in_threadpool(account.store.list_blocklist_items, record.name)
    return {"value": [filters.arm_item(i, account.id) for i in items]}


@router.get(ACCOUNT + "/raiBlocklists/{blocklist_name}/raiBlocklistItems/{item_name}")
async def get_blocklist_item(
    account: AccountDep, blocklist_name: str, item_name: str
) -> dict[str, Any]:
    item = await account.call(filters.get_item, account.store, blocklist_name, item_name)
    return filters.arm_item(item, account.id)


@router.put(ACCOUNT + "/raiBlocklists/{blocklist_name}/raiBlocklistItems/{item_name}")
async def put_blocklist_item(
    request: Request, account: AccountDep, blocklist_name: str, item_name: str
) -> JSONResponse:
    body: RaiBlocklistItem = parse_arm_body(await request.body(), RaiBlocklistItem)
    item, created = await account.call(
        filters.put_item,
        account.store,
        blocklist_name,
        item_name,
        body.properties.pattern,
        body.properties.is_regex,
    )
    _changed(account)
    return JSONResponse(filters.arm_item(item, account.id), status_code=201 if created else 200)


@router.delete(ACCOUNT + "/raiBlocklists/{blocklist_name}/raiBlocklistItems/{item_name}")
async def delete_blocklist_item(
    account: AccountDep, blocklist_name: str, item_name: str
) -> Response:
    existed = await account.call(filters.delete_item, account.store, blocklist_name, item_name)
    _changed(account)
    return Response(status_code=200 if existed else 204)


@router.post(ACCOUNT + "/raiBlocklists/{blocklist_name}/addRaiBlocklistItems")
async def add_blocklist_items(
    request: Request, account: AccountDep, blocklist_name: str
) -> dict[str, Any]:
    """``rai_blocklist_items.batch_add``: a JSON array of ``{name, properties}``."""
    raw = await request.body()
    body: RaiBlocklistItemBulk = parse_arm_body(
        b'{"items":' + (raw or b"null") + b"}", RaiBlocklistItemBulk
    )
    for entry in body.items:
        await account.call(
            filters.put_item,
            account.store,
            blocklist_name,
            entry.name,
            entry.properties.pattern,
            entry.properties.is_regex,
        )
    _changed(account)
    record = await account.call(filters.get_blocklist, account.store, blocklist_name)
    return filters.arm_blocklist(record, account.id)


@router.post(ACCOUNT + "/raiBlocklists/{blocklist_name}/deleteRaiBlocklistItems")
async def delete_blocklist_items(
    request: Request, account: AccountDep, blocklist_name: str
) -> Response:
    """``rai_blocklist_items.batch_delete``: a JSON array of item names."""
    try:
        names = json.loads(await request.body() or b"null")
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ArmError(
            400,
            "InvalidRequestContent",
            "The request content was invalid: expected a JSON array of blocklist item names.",
        )
    for name in names:
        await account.call(filters.delete_item, account.store, blocklist_name, name)
    _changed(account)
    return Response(status_code=200)


@router.get(ACCOUNT + "/usages")
async def list_usages(request: Request, account: AccountDep) -> dict[str, Any]:
    """Each deployment's tokens and requests this minute against its quota (Azure's
    ``UsageListResult``); ``$filter=name.value eq '...'`` picks some."""
    wanted = usage_filter(request.query_params.get("$filter"))
    now = datetime.now(timezone.utc)
    records = await run_in_threadpool(account.store.list_deployments)
    rows = await run_in_threadpool(account.store.usage, now)
    usages = arm_usages(records, rows, now)
    if wanted is not None:
        usages = [u for u in usages if u["name"]["value"] in wanted]
    return {"value": usages}
