"""The ``/openai/v1`` surface (§1.4): plain OpenAI routes, the deployment named by ``model``.

Meant for ``openai.OpenAI(base_url=".../openai/v1/", api_key=KEY)``, which sends the key as
``Authorization: Bearer`` (accepted by the auth middleware like on every route).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cerulean.api.deps import StateDep, V1ApiVersionDep, chat_call, embedding_call
from cerulean.api.respond import respond
from cerulean.errors import InvalidRequest
from cerulean.protocol.chat import parse_chat_request
from cerulean.protocol.embeddings import parse_embedding_request
from cerulean.services import chat, embeddings
from cerulean.services.catalog import model_objects

__all__ = ["require_model", "router"]

router = APIRouter()


def require_model(model: str | None) -> str:
    """The deployment a v1 body names in ``model`` (required there)."""
    if model is None:
        raise InvalidRequest("'model' is a required property", param="model")
    return model


@router.post("/openai/v1/chat/completions")
async def create_chat_completion(
    request: Request, state: StateDep, version: V1ApiVersionDep
) -> Response:
    body = parse_chat_request(await request.body(), version)
    deployment = await state.pool.resolve(require_model(body.model), "chat_completion")
    call = await chat_call(request, version, deployment)
    return await respond(request, await chat.create_chat_completion(call, body))


@router.post("/openai/v1/embeddings")
async def create_embeddings(
    request: Request, state: StateDep, version: V1ApiVersionDep
) -> Response:
    body = parse_embedding_request(await request.body(), version)
    deployment = await state.pool.resolve(require_model(body.model), "embeddings")
    call = embedding_call(request, version, deployment)
    return await respond(request, await embeddings.create_embeddings(call, body))


@router.get("/openai/v1/models")
async def list_models(state: StateDep, version: V1ApiVersionDep) -> dict[str, Any]:
    data = model_objects(state.served, version, state.started_at)
    for model in data:  # the fields openai's Model type expects, next to Azure's
        model["created"] = model["created_at"]
        model["owned_by"] = "system"
    return {"object": "list", "data": data}
