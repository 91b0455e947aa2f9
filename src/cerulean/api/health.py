"""``GET /healthz``: 200 once the model is loaded, 503 before; needs no key."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cerulean.api.deps import StateDep

__all__ = ["PUBLIC_PATHS", "router"]

router = APIRouter()
PUBLIC_PATHS = frozenset({"/healthz"})


@router.get("/healthz", include_in_schema=True)
async def healthz(state: StateDep) -> JSONResponse:
    if state.ready:
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "loading"}, status_code=503)
