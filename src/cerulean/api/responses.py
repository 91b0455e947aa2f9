"""The Responses API: ``/openai/v1/responses`` (the plain ``OpenAI`` client) and
``/openai/responses?api-version=`` (``AzureOpenAI``, from 2025-03-01-preview); the deployment is
the body's ``model`` on both (docs/responses.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cerulean.api.deps import StateDep, api_version_of, chat_call, v1_api_version_of
from cerulean.api.respond import respond
from cerulean.api.v1 import require_model
from cerulean.errors import InvalidRequest
from cerulean.protocol.apiversions import ApiVersion
from cerulean.protocol.responses import check_responses_version, parse_response_request
from cerulean.protocol.sse import SSE_MEDIA_TYPE
from cerulean.services import responses as service
from cerulean.services.responses import ResponsesContext

__all__ = ["router"]

router = APIRouter()

_PREFIXES = ("/openai/v1/responses", "/openai/responses")


async def _version(request: Request) -> ApiVersion:
    """v1 (none, ``v1`` or ``preview``) or a dated version from 2025-03-01-preview."""
    if request.url.path.startswith("/openai/v1/"):
        return v1_api_version_of(request)
    version = api_version_of(request)
    check_responses_version(version)
    return version


VersionDep = Annotated[ApiVersion, Depends(_version)]


def _int(request: Request, name: str, default: int | None) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise InvalidRequest(
            f"Invalid '{name}': expected an integer, but got '{text[:40]}' instead.", param=name
        ) from None


def _flag(request: Request, name: str) -> bool:
    text = (request.query_params.get(name) or "false").lower()
    if text not in ("true", "false"):
        raise InvalidRequest(
            f"Invalid '{name}': expected a boolean, but got '{text[:40]}' instead.", param=name
        )
    return text == "true"


def _stream(events: Any) -> StreamingResponse:
    return StreamingResponse(events, media_type=SSE_MEDIA_TYPE)


async def create(request: Request, state: StateDep, version: VersionDep) -> Response:
    body = parse_response_request(await request.body())
    deployment = await state.pool.resolve(require_model(body.model), "chat_completion")
    call = await chat_call(request, version, deployment)
    answer = await service.create_response(ResponsesContext.of(state), call, body)
    return await respond(request, answer)


async def retrieve(
    request: Request, state: StateDep, _version: VersionDep, response_id: str
) -> Response:
    ctx = ResponsesContext.of(state)
    if _flag(request, "stream"):
        after = _int(request, "starting_after", None)
        return _stream(await service.resume_stream(ctx, response_id, after))
    return JSONResponse(await service.get_response(ctx, response_id))


async def delete(state: StateDep, _version: VersionDep, response_id: str) -> Response:
    body = await service.delete_response(ResponsesContext.of(state), response_id)
    return JSONResponse(body)


async def cancel(state: StateDep, _version: VersionDep, response_id: str) -> Response:
    return JSONResponse(await service.cancel_response(ResponsesContext.of(state), response_id))


async def input_items(
    request: Request, state: StateDep, _version: VersionDep, response_id: str
) -> Response:
    query = request.query_params
    page = await service.list_input_items(
        ResponsesContext.of(state),
        response_id,
        after=query.get("after"),
        before=query.get("before"),
        limit=_int(request, "limit", 20) or 0,
        order=query.get("order", "desc"),
    )
    return JSONResponse(page)


for _prefix in _PREFIXES:
    router.add_api_route(_prefix, create, methods=["POST"])
    router.add_api_route(_prefix + "/{response_id}", retrieve, methods=["GET"])
    router.add_api_route(_prefix + "/{response_id}", delete, methods=["DELETE"])
    router.add_api_route(_prefix + "/{response_id}/cancel", cancel, methods=["POST"])
    router.add_api_route(_prefix + "/{response_id}/input_items", input_items, methods=["GET"])
