"""``POST /openai/deployments/{deployment-id}/chat/completions``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cerulean.api.deps import ApiVersionDep, ChatDeploymentDep, chat_call
from cerulean.api.respond import respond
from cerulean.protocol.chat import parse_chat_request
from cerulean.services import chat as service

__all__ = ["router"]

router = APIRouter()


@router.post("/openai/deployments/{deployment_id}/chat/completions")
async def create_chat_completion(
    request: Request, version: ApiVersionDep, deployment: ChatDeploymentDep
) -> Response:
    body = parse_chat_request(await request.body(), version)
    answer = await service.create_chat_completion(
        await chat_call(request, version, deployment), body
    )
    return await respond(request, answer)
