"""``POST /openai/deployments/{deployment-id}/embeddings``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cerulean.deps import ApiVersionDep, EmbeddingDeploymentDep
from cerulean.protocol.common import parse_body
from cerulean.protocol.embeddings import CreateEmbeddingRequest
from cerulean.services.embeddings import check_dimensions, embedding_body, to_inputs, to_texts

__all__ = ["router"]

router = APIRouter()


@router.post("/openai/deployments/{deployment_id}/embeddings")
async def create_embeddings(
    request: Request, _version: ApiVersionDep, deployment: EmbeddingDeploymentDep
) -> JSONResponse:
    body = parse_body(await request.body(), CreateEmbeddingRequest)
    inputs = to_inputs(body)
    info = deployment.engine.info
    check_dimensions(body, info)
    result = await deployment.engine.embed(await to_texts(inputs))
    return JSONResponse(
        embedding_body(result, model=info.name, encoding=body.encoding_format),
        headers={"x-ms-deployment-name": deployment.record.name},
    )
