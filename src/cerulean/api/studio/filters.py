"""The Studio's Content filters page: the policies (built-in and custom) and the deployments
using each, the blocklists and their items; create a blocklist, add and remove items, assign a
policy to a deployment. Every change goes through :mod:`cerulean.services.filtering.manage` (the
ARM routes' and the CLI's functions) and applies to this server's next request."""

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
)
from cerulean.errors import ControlError
from cerulean.services import deployments as deployment_service
from cerulean.services.filtering import manage
from cerulean.services.filtering.policy import DEFAULT_POLICY
from cerulean.state import AppState
from cerulean.store.base import Store

__all__ = ["router"]

router = APIRouter(include_in_schema=False)  # included by the Studio's router (its prefix)
_LIST_KEYS = ("customBlocklists", "promptBlocklists", "completionBlocklists")


def _policy_rows(store: Store) -> list[dict[str, Any]]:
    uses = manage.policy_users(store)
    rows = []
    for name, props in manage.list_policies(store):
        lists = [item["blocklistName"] for key in _LIST_KEYS for item in props.get(key) or []]
        rows.append(
            {
                "name": name,
                "builtin": props.get("type") == "SystemManaged",
                "mode": props.get("mode") or "Default",
                "base": props.get("basePolicyName") or "",
                "blocklists": sorted(set(lists), key=str.lower),
                "deployments": uses.get(name.lower(), []),
            }
        )
    return rows


def _contents(store: Store) -> dict[str, Any]:
    """What the page shows, read in one go (in a worker thread)."""
    return {
        "policies": _policy_rows(store),
        "blocklists": [
            {"record": record, "entries": store.list_blocklist_items(record.name)}
            for record in store.list_blocklists()
        ],
        "deployments": [
            {"name": d.name, "policy": d.rai_policy or DEFAULT_POLICY}
            for d in store.list_deployments()
        ],
    }


async def _filters_page(
    state: AppState,
    session: Any,
    *,
    notice: str = "",
    error: str = "",
    form: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    contents = await run_in_threadpool(_contents, state.store)
    return page(
        "content_filters.html",
        session=session,
        active="content-filters",
        notice=notice,
        error=error,
        form=form or {},
        status=status,
        **contents,
    )


async def _changed(state: AppState, session: Any, notice: str) -> Response:
    state.content_safety.invalidate()  # this server applies the change to its next request
    return await _filters_page(state, session, notice=notice)


@router.get("/content-filters")
async def content_filters(request: Request, state: StateDep) -> Response:
    return await _filters_page(state, require_session(request, state))


@router.post("/content-filters/blocklists")
async def create_blocklist(request: Request, state: StateDep) -> Response:
    session, fields = await checked_form(request, state)
    name = fields.get("name", "").strip()
    description = fields.get("description", "").strip() or None
    try:
        record, created = await run_in_threadpool(
            manage.put_blocklist, state.store, name, description
        )
    except ControlError as exc:
        form = {**fields, "form": "blocklist"}
        return await _filters_page(
            state, session, error=exc.message, form=form, status=control_status(exc)
        )
    verb = "Created" if created else "Updated"
    return await _changed(state, session, f"{verb} blocklist {record.name}.")


@router.post("/content-filters/blocklists/{blocklist}/items")
async def add_item(request: Request, state: StateDep, blocklist: str) -> Response:
    session, fields = await checked_form(request, state)
    is_regex = fields.get("regex") in ("on", "true", "1")
    try:
        record = await run_in_threadpool(
            manage.add_item,
            state.store,
            blocklist,
            fields.get("pattern", ""),
            is_regex,
            fields.get("item", "").strip() or None,
        )
    except ControlError as exc:
        form = {**fields, "form": "item", "blocklist": blocklist}
        return await _filters_page(
            state, session, error=exc.message, form=form, status=control_status(exc)
        )
    kind = "regular expression" if record.is_regex else "phrase"
    return await _changed(
        state, session, f"Added {kind} {record.pattern!r} to {record.blocklist} as {record.name}."
    )


@router.post("/content-filters/blocklists/{blocklist}/items/{item}/remove")
async def remove_item(request: Request, state: StateDep, blocklist: str, item: str) -> Response:
    session, fields = await checked_form(request, state)
    if fields.get("confirm") != "yes":
        return page(
            "confirm.html",
            session=session,
            active="content-filters",
            title=f"Remove {item} from {blocklist}?",
            message=f"Policies that use {blocklist} stop filtering its pattern at once.",
            action=f"{PREFIX}/content-filters/blocklists/{blocklist}/items/{item}/remove",
            button=f"Remove {item}",
            back=f"{PREFIX}/content-filters",
        )
    try:
        gone = await run_in_threadpool(manage.delete_item, state.store, blocklist, item)
    except ControlError as exc:
        return await _filters_page(state, session, error=exc.message, status=control_status(exc))
    if not gone:
        return await _filters_page(
            state, session, error=f"The blocklist {blocklist} has no item {item}.", status=404
        )
    return await _changed(state, session, f"Removed {item} from {blocklist}.")


@router.post("/content-filters/assign")
async def assign_policy(request: Request, state: StateDep) -> Response:
    session, fields = await checked_form(request, state)
    try:
        record, policy = await run_in_threadpool(
            deployment_service.assign_policy,
            state.store,
            fields.get("deployment", ""),
            fields.get("policy", "").strip(),
        )
    except ControlError as exc:
        form = {**fields, "form": "assign"}
        return await _filters_page(
            state, session, error=exc.message, form=form, status=control_status(exc)
        )
    return await _changed(state, session, f"Deployment {record.name} uses policy {policy}.")
