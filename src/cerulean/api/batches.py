"""Batches: ``/openai/batches`` (``?api-version=``) and ``/openai/v1/batches``: create,
retrieve, list, cancel. The deployment is named by the input file's lines (``body.model``)."""

# No "from __future__ import annotations": the routes below are built in a function, and
# FastAPI must see their annotations as objects (the local Version alias).

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from cerulean.api.deps import ApiVersionDep, StateDep, V1ApiVersionDep
from cerulean.errors import InvalidRequest
from cerulean.protocol.apiversions import ApiVersion
from cerulean.protocol.batches import parse_batch_request

__all__ = ["router"]

router = APIRouter()


def _dated(version: ApiVersionDep) -> ApiVersion:
    return version


def _v1(version: V1ApiVersionDep) -> ApiVersion:
    return version


def _limit(value: int | None) -> int:
    if value is None:
        return 20
    if not 1 <= value <= 100:
        raise InvalidRequest(
            f"Invalid value for 'limit': {value}. It must be between 1 and 100.", param="limit"
        )
    return value


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
        return await state.batches.listing(after=after, limit=_limit(limit))

    @router.get(prefix + "/{batch_id}")
    async def retrieve(state: StateDep, _version: Version, batch_id: str) -> dict[str, Any]:
        return await state.batches.get(batch_id)

    @router.post(prefix + "/{batch_id}/cancel")
    async def cancel(state: StateDep, _version: Version, batch_id: str) -> dict[str, Any]:
        return await state.batches.cancel(batch_id)


_routes("/openai/batches", _dated)
_routes("/openai/v1/batches", _v1)
