"""The listing routes: ``/openai/models`` and, on the old versions, ``/openai/deployments``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from cerulean.deps import ApiVersionDep, StateDep
from cerulean.errors import DeploymentNotFound, ResourceNotFound, ServiceUnavailable
from cerulean.services.catalog import deployment_object, model_object, model_objects
from cerulean.store.base import Store

__all__ = ["router"]

router = APIRouter()


@router.get("/openai/models")
@router.get("/openai/deployments/{deployment_id}/models")  # openai 1.x < 1.65.2 with a deployment
async def list_models(state: StateDep, version: ApiVersionDep) -> dict[str, Any]:
    return {"object": "list", "data": model_objects(state.engines, version, state.started_at)}


@router.get("/openai/models/{model_id}")
async def get_model(
    state: StateDep, version: ApiVersionDep, model_id: Annotated[str, Path()]
) -> dict[str, Any]:
    engine = state.engines.get(model_id)
    if engine is None:
        raise ResourceNotFound()
    return model_object(engine, version, state.started_at)


@router.get("/openai/deployments")
async def list_deployments(state: StateDep, version: ApiVersionDep) -> dict[str, Any]:
    if not version.lists_deployments:
        raise ResourceNotFound()
    records = await run_in_threadpool(_store(state.store).list_deployments)
    return {"object": "list", "data": [deployment_object(record) for record in records]}


@router.get("/openai/deployments/{deployment_id}")
async def get_deployment(
    state: StateDep, version: ApiVersionDep, deployment_id: Annotated[str, Path()]
) -> dict[str, Any]:
    if not version.lists_deployments:
        raise ResourceNotFound()
    record = await run_in_threadpool(_store(state.store).get_deployment, deployment_id)
    if record is None:
        raise DeploymentNotFound()
    return deployment_object(record)


def _store(store: Store | None) -> Store:
    if store is None:
        raise ServiceUnavailable()
    return store
