"""``POST /openai/deployments/{deployment-id}/completions`` (legacy completions)."""

from __future__ import annotations

import functools

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cerulean.api.chat import unless_disconnected
from cerulean.apiversions import ApiVersion
from cerulean.deps import ApiVersionDep, CompletionDeploymentDep, ResolvedDeployment
from cerulean.protocol.common import parse_body
from cerulean.protocol.completions import CreateCompletionRequest
from cerulean.protocol.gating import COMPLETION_ARGUMENTS, check_arguments
from cerulean.quota.admission import COMPLETIONS_OPERATION, Quota
from cerulean.quota.base import estimate_tokens
from cerulean.services.completions import (
    CompletionContext,
    CompletionPlan,
    collect_completions,
    plan_completion,
    prompt_estimate,
    start_generations,
    stream_completions,
)
from cerulean.streaming import SSE_MEDIA_TYPE

__all__ = ["router"]

router = APIRouter()


@router.post("/openai/deployments/{deployment_id}/completions")
async def create_completion(
    request: Request, version: ApiVersionDep, deployment: CompletionDeploymentDep
) -> Response:
    gate = functools.partial(check_arguments, table=COMPLETION_ARGUMENTS, version=version)
    body = parse_body(await request.body(), CreateCompletionRequest, gate)
    plan = plan_completion(body)
    headers = await _admit(request, plan, version, deployment)
    generations = await start_generations(deployment.engine, plan)
    info = deployment.engine.info
    ctx = CompletionContext(model=info.name, api_version=version, fingerprint=info.fingerprint)
    headers["x-ms-deployment-name"] = deployment.record.name
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


async def _admit(
    request: Request, plan: CompletionPlan, version: ApiVersion, deployment: ResolvedDeployment
) -> dict[str, str]:
    """Charge Azure's estimate (every prompt, ``max_tokens`` × ``best_of``) to the deployment."""
    tokens = sum(
        estimate_tokens(
            prompt_estimate(wanted),
            wanted.params.max_tokens,
            default_reservation=0,
            n=plan.n,
            best_of=plan.candidates,
        )
        for wanted in plan.requests
    )
    quota = Quota(request.app.state.cerulean, version.text)
    return await quota.admit(deployment.record, tokens=tokens, operation=COMPLETIONS_OPERATION)
