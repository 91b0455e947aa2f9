"""The Studio's Batches page: the batch jobs, newest first, and cancelling one (confirmed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cerulean.api.deps import StateDep
from cerulean.api.studio.pages import PREFIX, checked_form, page, require_session, utc_time
from cerulean.errors import APIError
from cerulean.services.batches import CANCELLABLE
from cerulean.state import AppState

__all__ = ["router"]

router = APIRouter(include_in_schema=False)  # included by the Studio's router (its prefix)
PAGE_SIZE = 50


def _row(batch: dict[str, Any]) -> dict[str, Any]:
    return {
        **batch,
        "created": utc_time(batch["created_at"]),
        "cancellable": batch["status"] in CANCELLABLE,
    }


async def _batches_page(
    state: AppState,
    session: Any,
    *,
    after: str | None = None,
    notice: str = "",
    error: str = "",
    status: int = 200,
) -> Response:
    listing = await state.batches.listing(after=after, limit=PAGE_SIZE)
    return page(
        "batches.html",
        session=session,
        active="batches",
        batches=[_row(b) for b in listing["data"]],
        more=listing["last_id"] if listing["has_more"] else None,
        paged=after is not None,
        runner=state.settings.batch_runner,
        notice=notice,
        error=error,
        status=status,
    )


@router.get("/batches")
async def batches(request: Request, state: StateDep) -> Response:
    session = require_session(request, state)
    return await _batches_page(state, session, after=request.query_params.get("after") or None)


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, state: StateDep, batch_id: str) -> Response:
    session, fields = await checked_form(request, state)
    if fields.get("confirm") != "yes":
        return page(
            "confirm.html",
            session=session,
            active="batches",
            title=f"Cancel {batch_id}?",
            message="Lines not run yet are dropped; the lines already done stay in its output "
            "file. A cancelled batch cannot be resumed.",
            action=f"{PREFIX}/batches/{batch_id}/cancel",
            button="Cancel the batch",
            back=f"{PREFIX}/batches",
        )
    try:
        batch = await state.batches.cancel(batch_id)
    except APIError as exc:
        return await _batches_page(state, session, error=exc.message, status=exc.status_code)
    return await _batches_page(state, session, notice=f"{batch['id']} is {batch['status']}.")
