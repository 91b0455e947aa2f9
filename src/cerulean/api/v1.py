"""The ``/openai/v1`` surface (§1.4): plain OpenAI routes, the deployment named by ``model``.

Meant for ``openai.OpenAI(base_url=".../openai/v1/", api_key=KEY)``, which sends the key as
``Authorization: Bearer`` (accepted by the auth middleware like on every route).
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cerulean.api.chat import serve_chat
from cerulean.deps import StateDep, V1ApiVersionDep, resolve_deployment
from cerulean.errors import InvalidRequest
from cerulean.protocol.chat import CreateChatCompletionRequest
from cerulean.protocol.common import parse_body
from cerulean.protocol.gating import check_chat_values
from cerulean.services.catalog import model_objects

__all__ = ["router", "require_model"]

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
    gate = functools.partial(check_chat_values, version=version)
    body = parse_body(await request.body(), CreateChatCompletionRequest, gate)
    deployment = await resolve_deployment(state, require_model(body.model))
    return await serve_chat(request, body, version, deployment)


@router.get("/openai/v1/models")
async def list_models(state: StateDep, version: V1ApiVersionDep) -> dict[str, Any]:
    data = model_objects(state.engines, version, state.started_at)
    for model in data:  # the fields openai's Model type expects, next to Azure's
        model["created"] = model["created_at"]
        model["owned_by"] = "system"
    return {"object": "list", "data": data}
