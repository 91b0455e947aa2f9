"""``POST /openai/deployments/{deployment-id}/completions`` (legacy completions)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cerulean.api.deps import ApiVersionDep, CompletionDeploymentDep, chat_call
from cerulean.api.respond import respond
from cerulean.protocol.completions import parse_completion_request
from cerulean.services import completions as service

__all__ = ["router"]

router = APIRouter()


@router.post("/openai/deployments/{deployment_id}/completions")
async def create_completion(
    request: Request, version: ApiVersionDep, deployment: CompletionDeploymentDep
) -> Response:
    body = parse_completion_request(await request.body(), version)
    answer = await service.create_completion(await chat_call(request, version, deployment), body)
    return await respond(request, answer)
