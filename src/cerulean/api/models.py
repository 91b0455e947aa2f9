"""The listing routes: ``/openai/models`` and, on the old versions, ``/openai/deployments``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from cerulean.api.deps import ApiVersionDep, StateDep
from cerulean.engines.base import Engine
from cerulean.engines.embedding import EmbeddingEngine
from cerulean.errors import APIError, DeploymentNotFound, ResourceNotFound
from cerulean.services.catalog import deployment_object, model_object, model_objects
from cerulean.state import AppState

__all__ = ["router"]

router = APIRouter()


@router.get("/openai/models")
@router.get("/openai/deployments/{deployment_id}/models")  # openai 1.x < 1.65.2 with a deployment
async def list_models(state: StateDep, version: ApiVersionDep) -> dict[str, Any]:
    engines = await _servable(state)
    return {"object": "list", "data": model_objects(engines, version, state.started_at)}


@router.get("/openai/models/{model_id}")
async def get_model(
    state: StateDep, version: ApiVersionDep, model_id: Annotated[str, Path()]
) -> dict[str, Any]:
    engine = state.served.get(model_id) or (await _servable(state)).get(model_id)
    if engine is None:
        raise ResourceNotFound()
    return model_object(engine, version, state.started_at)


@router.get("/openai/deployments")
async def list_deployments(state: StateDep, version: ApiVersionDep) -> dict[str, Any]:
    if not version.lists_deployments:
        raise ResourceNotFound()
    records = await run_in_threadpool(state.store.list_deployments)
    return {"object": "list", "data": [deployment_object(record) for record in records]}


@router.get("/openai/deployments/{deployment_id}")
async def get_deployment(
    state: StateDep, version: ApiVersionDep, deployment_id: Annotated[str, Path()]
) -> dict[str, Any]:
    if not version.lists_deployments:
        raise ResourceNotFound()
    record = await run_in_threadpool(state.store.get_deployment, deployment_id)
    if record is None or record.name != deployment_id:  # exact on the data plane (§10)
        raise DeploymentNotFound()
    return deployment_object(record)


async def _servable(state: AppState) -> dict[str, Engine | EmbeddingEngine]:
    """The models loaded here, and those upstream-backed deployments serve (by the model name
    each deployment gives; a deployment whose upstreams are not registered is left out)."""
    engines = dict(state.served)
    gateway = state.pool.gateway
    if gateway is None:
        return engines
    records = await run_in_threadpool(state.store.list_deployments)
    for record in records:
        if not record.upstreams or record.model in engines:
            continue
        try:
            engines[record.model] = await gateway.engine_for(record)
        except APIError:
            continue
    return engines
