"""``POST /openai/deployments/{deployment-id}/embeddings``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cerulean.api.deps import ApiVersionDep, EmbeddingDeploymentDep, embedding_call
from cerulean.api.respond import respond
from cerulean.protocol.embeddings import parse_embedding_request
from cerulean.services import embeddings as service

__all__ = ["router"]

router = APIRouter()


@router.post("/openai/deployments/{deployment_id}/embeddings")
async def create_embeddings(
    request: Request, version: ApiVersionDep, deployment: EmbeddingDeploymentDep
) -> Response:
    body = parse_embedding_request(await request.body(), version)
    answer = await service.create_embeddings(embedding_call(request, version, deployment), body)
    return await respond(request, answer)
