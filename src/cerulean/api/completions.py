"""``POST /openai/deployments/{deployment-id}/completions`` (legacy completions)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cerulean.api.chat import _unless_disconnected as unless_disconnected
from cerulean.deps import ApiVersionDep, DeploymentDep
from cerulean.protocol.common import parse_body
from cerulean.protocol.completions import CreateCompletionRequest
from cerulean.services.completions import (
    CompletionContext,
    collect_completions,
    plan_completion,
    start_generations,
    stream_completions,
)
from cerulean.streaming import SSE_MEDIA_TYPE

__all__ = ["router"]

router = APIRouter()


@router.post("/openai/deployments/{deployment_id}/completions")
async def create_completion(
    request: Request, version: ApiVersionDep, deployment: DeploymentDep
) -> Response:
    body = parse_body(await request.body(), CreateCompletionRequest)
    plan = plan_completion(body)
    generations = await start_generations(deployment.engine, plan)
    ctx = CompletionContext(model=deployment.engine.info.name, api_version=version)
    headers = {"x-ms-deployment-name": deployment.record.name}
    if body.stream:
        events = stream_completions(
            ctx,
            plan,
            generations,
            include_usage=bool((body.stream_options or {}).get("include_usage")),
            request_id=request.state.request_id,
        )
        return StreamingResponse(events, media_type=SSE_MEDIA_TYPE, headers=headers)
    result = await unless_disconnected(request, collect_completions(ctx, plan, generations))
    if result is None:
        for generation in generations:
            await generation.aclose()
        return Response(status_code=499)
    return JSONResponse(result, headers=headers)
