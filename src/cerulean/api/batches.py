"""Batches: ``/openai/batches`` (``?api-version=``) and ``/openai/v1/batches``: create,
retrieve, list, cancel. The deployment is named by the input file's lines (``body.model``)."""

# No "from __future__ import annotations": the routes below are built in a function, and
# FastAPI must see their annotations as objects (the local Version alias).

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from cerulean.api.deps import StateDep, get_api_version, get_v1_api_version, page_limit
from cerulean.protocol.apiversions import ApiVersion
from cerulean.protocol.batches import parse_batch_request

__all__ = ["router"]

router = APIRouter()


def _routes(prefix: str, version_dep: Any) -> None:
    Version = Annotated[ApiVersion, Depends(version_dep)]

    @router.post(prefix)
    async def create(request: Request, state: StateDep, version: Version) -> dict[str, Any]:
        body = parse_batch_request(await request.body())
        return await state.batches.create(body, version)

    @router.get(prefix)
    async def listing(
        state: StateDep,
        _version: Version,
        after: Annotated[str | None, Query()] = None,
        limit: Annotated[int | None, Query()] = None,
    ) -> dict[str, Any]:
        return await state.batches.listing(
            after=after, limit=page_limit(limit, default=20, most=100)
        )

    @router.get(prefix + "/{batch_id}")
    async def retrieve(state: StateDep, _version: Version, batch_id: str) -> dict[str, Any]:
        return await state.batches.get(batch_id)

    @router.post(prefix + "/{batch_id}/cancel")
    async def cancel(state: StateDep, _version: Version, batch_id: str) -> dict[str, Any]:
        return await state.batches.cancel(batch_id)


_routes("/openai/batches", get_api_version)
_routes("/openai/v1/batches", get_v1_api_version)
