"""The management plane in Azure Resource Manager's shapes (wire reference §9).

``/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.CognitiveServices/accounts/{a}/…``:
deployments (PUT, GET, DELETE, list), keys (listKeys, regenerateKey) and usages, so that the
management SDKs and ARM tooling work against Cerulean. Authorised by the admin token
(``CERULEAN_ADMIN_TOKEN`` as ``Authorization: Bearer``), never by account keys; any subscription
and resource group is accepted, the account must be ``settings.account_name``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cerulean.api.deps import StateDep
from cerulean.errors import ArmError, ControlError
from cerulean.protocol.management import Deployment, RegenerateKeyParameters, parse_arm_body
from cerulean.services import deployments as deployment_service
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


def _check_admin(request: Request, state: AppState) -> None:
    token = state.settings.admin_token
    expected = token.get_secret_value() if token is not None else ""
    if not expected:
        raise ArmError(
            403,
            "AuthorizationFailed",
            "The management API is disabled on this server. To enable it, set "
            "CERULEAN_ADMIN_TOKEN to a long random secret, restart the server, and send "
            "'Authorization: Bearer <that secret>'.",
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ArmError(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing or is not a Bearer "
            "token; send 'Authorization: Bearer <CERULEAN_ADMIN_TOKEN>'.",
        )
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
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


def get_account(
    request: Request, state: StateDep, subscription_id: str, resource_group: str, account_name: str
) -> Account:
    _check_admin(request, state)
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
