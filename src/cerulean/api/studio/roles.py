"""The Studio's Role assignments page: who holds which of Azure's built-in roles (Entra ID
RBAC), assigning one and removing one (confirmed), through :mod:`cerulean.services.rbac` (the
functions of ``cerulean roles``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cerulean.api.deps import StateDep
from cerulean.api.studio.pages import (
    PREFIX,
    checked_form,
    control_status,
    page,
    require_session,
    utc_time,
)
from cerulean.errors import ControlError
from cerulean.services.rbac import ROLES, assign_role, find_role, remove_role, role_by_id
from cerulean.state import AppState

__all__ = ["router"]

router = APIRouter(include_in_schema=False)  # included by the Studio's router (its prefix)


async def _rows(state: AppState) -> list[dict[str, Any]]:
    rows = []
    for record in await run_in_threadpool(state.store.list_role_assignments):
        role = role_by_id(record.role_id)
        rows.append(
            {
                "principal": record.principal_id,
                "role": role.name if role else record.role_id,
                "role_id": record.role_id,
                "created": utc_time(record.created_at),
            }
        )
    return rows


async def _roles_page(
    state: AppState,
    session: Any,
    *,
    notice: str = "",
    error: str = "",
    form: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    return page(
        "roles.html",
        session=session,
        active="roles",
        assignments=await _rows(state),
        roles=ROLES,
        account=state.settings.account_name,
        entra=state.entra is not None,
        notice=notice,
        error=error,
        form=form or {},
        status=status,
    )


async def _changed(state: AppState, session: Any, notice: str) -> Response:
    if state.entra is not None:
        await state.entra.roles.reload()  # this server applies the change at once
    return await _roles_page(state, session, notice=notice)


@router.get("/roles")
async def roles(request: Request, state: StateDep) -> Response:
    return await _roles_page(state, require_session(request, state))


@router.post("/roles")
async def assign(request: Request, state: StateDep) -> Response:
    session, fields = await checked_form(request, state)
    try:
        principal, role, created = await run_in_threadpool(
            assign_role, state.store, fields.get("principal", ""), fields.get("role", "")
        )
    except ControlError as exc:
        return await _roles_page(
            state, session, error=exc.message, form=fields, status=control_status(exc)
        )
    verb = "now holds" if created else "already held"
    return await _changed(state, session, f"{principal} {verb} '{role.name}'.")


@router.post("/roles/remove")
async def remove(request: Request, state: StateDep) -> Response:
    session, fields = await checked_form(request, state)
    principal, role = fields.get("principal", ""), fields.get("role", "")
    if fields.get("confirm") != "yes":
        try:
            name = find_role(role).name
        except ControlError as exc:
            return await _roles_page(state, session, error=exc.message, status=400)
        return page(
            "confirm.html",
            session=session,
            active="roles",
            title=f"Remove '{name}' from {principal}?",
            message=f"Tokens of {principal} stop getting what '{name}' permits within a few "
            "seconds on every server (at once on this one).",
            action=f"{PREFIX}/roles/remove",
            fields={"principal": principal, "role": role},
            button="Remove the assignment",
            back=f"{PREFIX}/roles",
        )
    try:
        principal, definition = await run_in_threadpool(remove_role, state.store, principal, role)
    except ControlError as exc:
        return await _roles_page(state, session, error=exc.message, status=control_status(exc))
    return await _changed(state, session, f"{principal} no longer holds '{definition.name}'.")
