"""``POST /openai/deployments/{deployment-id}/embeddings``."""

from __future__ import annotations

import functools

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cerulean.apiversions import ApiVersion
from cerulean.deps import ApiVersionDep, EmbeddingDeploymentDep, ResolvedEmbeddingDeployment
from cerulean.protocol.common import parse_body
from cerulean.protocol.embeddings import CreateEmbeddingRequest
from cerulean.protocol.gating import EMBEDDING_ARGUMENTS, check_arguments
from cerulean.quota.admission import EMBEDDINGS_OPERATION, Quota
from cerulean.services.embeddings import check_dimensions, embedding_body, to_inputs, to_texts

__all__ = ["parse_embedding_request", "router", "serve_embeddings"]

router = APIRouter()


def parse_embedding_request(raw: bytes, version: ApiVersion) -> CreateEmbeddingRequest:
    """The body, checked against the arguments ``version`` knows."""
    gate = functools.partial(check_arguments, table=EMBEDDING_ARGUMENTS, version=version)
    return parse_body(raw, CreateEmbeddingRequest, gate)


@router.post("/openai/deployments/{deployment_id}/embeddings")
async def create_embeddings(
    request: Request, version: ApiVersionDep, deployment: EmbeddingDeploymentDep
) -> JSONResponse:
    body = parse_embedding_request(await request.body(), version)
    return await serve_embeddings(request, body, version, deployment)


async def serve_embeddings(
    request: Request,
    body: CreateEmbeddingRequest,
    version: ApiVersion,
    deployment: ResolvedEmbeddingDeployment,
) -> JSONResponse:
    """Answer a parsed embeddings request (shared with the ``/openai/v1`` route)."""
    inputs = to_inputs(body)
    info = deployment.engine.info
    check_dimensions(body, info)
    texts = await to_texts(inputs)
    # Admission estimate: about four characters a token (the exact count needs the model's
    # tokenizer, which runs on the engine's thread); usage reports the real count.
    estimate = sum(len(text) // 4 + 1 for text in texts)
    quota = Quota(request.app.state.cerulean, version.text)
    headers = await quota.admit(deployment.record, tokens=estimate, operation=EMBEDDINGS_OPERATION)
    result = await deployment.engine.embed(texts)
    headers["x-ms-deployment-name"] = deployment.record.name
    return JSONResponse(
        embedding_body(result, model=info.name, encoding=body.encoding_format), headers=headers
    )
