"""``POST /openai/deployments/{deployment-id}/chat/completions``."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cerulean.apiversions import ApiVersion
from cerulean.deps import ApiVersionDep, DeploymentDep, ResolvedDeployment
from cerulean.engines.base import GenerationRequest
from cerulean.protocol.chat import CreateChatCompletionRequest
from cerulean.protocol.common import parse_body
from cerulean.protocol.gating import check_chat_values
from cerulean.quota.admission import CHAT_OPERATION, Quota
from cerulean.quota.base import estimate_tokens
from cerulean.services.chat import (
    ChatContext,
    collect_completion,
    plan_request,
    stream_completion,
    to_generation_request,
)
from cerulean.streaming import SSE_MEDIA_TYPE

__all__ = ["router", "serve_chat", "unless_disconnected"]

router = APIRouter()


@router.post("/openai/deployments/{deployment_id}/chat/completions")
async def create_chat_completion(
    request: Request, version: ApiVersionDep, deployment: DeploymentDep
) -> Response:
    gate = functools.partial(check_chat_values, version=version)
    body = parse_body(await request.body(), CreateChatCompletionRequest, gate)
    return await serve_chat(request, body, version, deployment)


async def serve_chat(
    request: Request,
    body: CreateChatCompletionRequest,
    version: ApiVersion,
    deployment: ResolvedDeployment,
) -> Response:
    """Answer a parsed chat request on ``deployment`` (shared with the ``/openai/v1`` route)."""
    plan = plan_request(body)
    wanted = to_generation_request(body, plan)
    headers: dict[str, str] = {}

    async def admit(prompt_tokens: int) -> None:
        headers.update(await _admit(request, wanted, prompt_tokens, version, deployment))

    generation = await deployment.engine.generate(wanted, admit=admit)
    info = deployment.engine.info
    ctx = ChatContext(
        model=info.name,
        api_version=version,
        tools=plan,
        fingerprint=info.fingerprint,
        logprobs=bool(body.logprobs),
    )
    headers["x-ms-deployment-name"] = deployment.record.name
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
    result = await unless_disconnected(request, collect_completion(ctx, generation))
    if result is None:
        await generation.aclose()
        return Response(status_code=499)
    return JSONResponse(result, headers=headers)


async def _admit(
    request: Request,
    wanted: GenerationRequest,
    prompt: int,
    version: ApiVersion,
    deployment: ResolvedDeployment,
) -> dict[str, str]:
    """Charge Azure's estimate to the deployment's rate limits (429 over them, §7)."""
    info = deployment.engine.info
    reservation = info.default_max_tokens or max(0, info.context_length - prompt)
    tokens = estimate_tokens(
        prompt, wanted.params.max_tokens, default_reservation=reservation, n=wanted.n
    )
    quota = Quota(request.app.state.cerulean, version.text)
    return await quota.admit(deployment.record, tokens=tokens, operation=CHAT_OPERATION)


async def unless_disconnected(request: Request, work: Any) -> dict[str, Any] | None:
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
