"""``POST /openai/deployments/{deployment-id}/chat/completions``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cerulean.deps import ApiVersionDep, DeploymentDep
from cerulean.protocol.chat import CreateChatCompletionRequest
from cerulean.protocol.common import parse_body
from cerulean.services.chat import (
    ChatContext,
    collect_completion,
    stream_completion,
    to_generation_request,
)
from cerulean.streaming import SSE_MEDIA_TYPE

__all__ = ["router"]

router = APIRouter()


@router.post("/openai/deployments/{deployment_id}/chat/completions")
async def create_chat_completion(
    request: Request, version: ApiVersionDep, deployment: DeploymentDep
) -> Response:
    body = parse_body(await request.body(), CreateChatCompletionRequest)
    wanted = to_generation_request(body)
    generation = await deployment.engine.generate(wanted)
    ctx = ChatContext(
        model=deployment.engine.info.name, api_version=version, logprobs=bool(body.logprobs)
    )
    headers = {"x-ms-deployment-name": deployment.record.name}
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        events = stream_completion(
            ctx,
            generation,
            include_usage=include_usage,
            request_id=request.state.request_id,
            n=wanted.n,
        )
        return StreamingResponse(events, media_type=SSE_MEDIA_TYPE, headers=headers)
    result = await _unless_disconnected(request, collect_completion(ctx, generation))
    if result is None:
        await generation.aclose()
        return Response(status_code=499)
    return JSONResponse(result, headers=headers)


async def _unless_disconnected(request: Request, work: Any) -> dict[str, Any] | None:
    """Await ``work`` unless the client goes away first; then cancel it (freeing its slot).

    The body has been read, so the next ASGI message can only be ``http.disconnect``.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(request.receive())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        result: dict[str, Any] = task.result()
        return result
    task.cancel()
    return None
