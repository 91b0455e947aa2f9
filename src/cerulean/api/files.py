"""Files: ``/openai/files`` (``?api-version=``, as ``AzureOpenAI`` calls them) and
``/openai/v1/files`` (the plain ``OpenAI`` client): upload, list, retrieve, delete, content."""

# No "from __future__ import annotations": the routes below are built in a function, and
# FastAPI must see their annotations as objects (the local Version alias).

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from cerulean.api.deps import ApiVersionDep, StateDep, V1ApiVersionDep
from cerulean.errors import InvalidRequest
from cerulean.protocol.apiversions import ApiVersion
from cerulean.services.files import file_object

__all__ = ["UPLOAD_PATHS", "router"]

router = APIRouter()
UPLOAD_PATHS = ("/openai/files", "/openai/v1/files")


def _dated(version: ApiVersionDep) -> ApiVersion:
    return version


def _v1(version: V1ApiVersionDep) -> ApiVersion:
    return version


def _limit(value: int | None) -> int:
    if value is None:
        return 10_000
    if not 1 <= value <= 10_000:
        raise InvalidRequest(
            f"Invalid value for 'limit': {value}. It must be between 1 and 10000.", param="limit"
        )
    return value


def _order(value: str | None) -> str:
    if value not in (None, "asc", "desc"):
        raise InvalidRequest(
            f"Invalid value for 'order': '{value}'. Supported values are: 'asc', 'desc'.",
            param="order",
        )
    return value or "desc"


def _routes(prefix: str, version_dep: Any) -> None:
    Version = Annotated[ApiVersion, Depends(version_dep)]

    @router.post(prefix)
    async def upload(request: Request, state: StateDep, _version: Version) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        record = await state.files.upload(content_type, request.stream())
        return JSONResponse(file_object(record))

    @router.get(prefix)
    async def listing(
        state: StateDep,
        _version: Version,
        purpose: Annotated[str | None, Query()] = None,
        after: Annotated[str | None, Query()] = None,
        limit: Annotated[int | None, Query()] = None,
        order: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        return await state.files.listing(
            purpose=purpose, after=after, limit=_limit(limit), order=_order(order)
        )

    @router.get(prefix + "/{file_id}")
    async def retrieve(state: StateDep, _version: Version, file_id: str) -> dict[str, Any]:
        return file_object(await state.files.get(file_id))

    @router.delete(prefix + "/{file_id}")
    async def delete(state: StateDep, _version: Version, file_id: str) -> dict[str, Any]:
        return await state.files.delete(file_id)

    @router.get(prefix + "/{file_id}/content")
    async def content(state: StateDep, _version: Version, file_id: str) -> FileResponse:
        record, path = await state.files.content(file_id)
        media = "application/jsonl" if record.filename.endswith(".jsonl") else None
        return FileResponse(path, media_type=media or "application/octet-stream")


_routes("/openai/files", _dated)
_routes("/openai/v1/files", _v1)
