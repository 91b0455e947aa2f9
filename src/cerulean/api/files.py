"""Files: ``/openai/files`` (``?api-version=``, as ``AzureOpenAI`` calls them) and
``/openai/v1/files`` (the plain ``OpenAI`` client): upload, list, retrieve, delete, content."""

# No "from __future__ import annotations": the routes below are built in a function, and
# FastAPI must see their annotations as objects (the local Version alias).

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from cerulean.api.deps import StateDep, get_api_version, get_v1_api_version, page_limit
from cerulean.errors import InvalidRequest
from cerulean.protocol.apiversions import ApiVersion
from cerulean.services.files import file_object

__all__ = ["UPLOAD_PATHS", "router"]

router = APIRouter()
UPLOAD_PATHS = ("/openai/files", "/openai/v1/files")


_LIST_LIMIT = 10_000  # the default and the most a files listing returns


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
            purpose=purpose,
            after=after,
            limit=page_limit(limit, default=10_000, most=10_000),
            order=_order(order),
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


_routes("/openai/files", get_api_version)
_routes("/openai/v1/files", get_v1_api_version)
