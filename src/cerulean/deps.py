"""Request dependencies as ``Annotated`` aliases, so handler signatures read as types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from cerulean.apiversions import ApiVersion, parse_api_version, parse_v1_api_version
from cerulean.engines.base import Capability, Engine
from cerulean.engines.embedding import EmbeddingEngine
from cerulean.errors import (
    DeploymentNotFound,
    OperationNotSupported,
    ResourceNotFound,
    ServiceUnavailable,
    UnsupportedApiVersion,
)
from cerulean.state import AppState
from cerulean.store.base import DeploymentRecord

__all__ = [
    "ApiVersionDep",
    "CompletionDeploymentDep",
    "DeploymentDep",
    "EmbeddingDeploymentDep",
    "ResolvedDeployment",
    "ResolvedEmbeddingDeployment",
    "StateDep",
    "V1ApiVersionDep",
    "resolve_deployment",
    "resolve_embedding_deployment",
]

# Azure's names for the operations in OperationNotSupported messages.
_OPERATIONS: dict[Capability, str] = {
    "chat_completion": "chatCompletion",
    "completion": "completion",
    "embeddings": "embeddings",
}


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.cerulean
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_api_version(request: Request) -> ApiVersion:
    """The request's ``api-version``; missing or unknown ones get Azure's 404 (§1.5)."""
    version = parse_api_version(request.query_params.get("api-version"))
    if version is None:
        raise ResourceNotFound()
    return version


ApiVersionDep = Annotated[ApiVersion, Depends(get_api_version)]


@dataclass(frozen=True)
class ResolvedDeployment:
    """A deployment and the engine that serves its model."""

    record: DeploymentRecord
    engine: Engine


async def _find_record(state: AppState, deployment_id: str, needs: Capability) -> DeploymentRecord:
    """The deployment named in the path (404 DeploymentNotFound), whose model can do ``needs``.

    A model that cannot (chat on an embedding model, embeddings on a chat model) gets Azure's
    400 OperationNotSupported naming the model.
    """
    if state.store is None:
        raise ServiceUnavailable()
    record = await run_in_threadpool(state.store.get_deployment, deployment_id)
    if record is None:
        raise DeploymentNotFound()
    served = state.engines.get(record.model) or state.embedders.get(record.model)
    if served is not None and needs not in served.info.capabilities:
        raise OperationNotSupported(_OPERATIONS[needs], served.info.name)
    return record


async def resolve_deployment(
    state: AppState, name: str, needs: Capability = "chat_completion"
) -> ResolvedDeployment:
    """The deployment called ``name`` (404 DeploymentNotFound), ready to serve (else 503)."""
    record = await _find_record(state, name, needs)
    engine = state.engines.get(record.model)
    if state.pool is not None:
        # Loads the model of a deployment created since the server started (503 while it does).
        engine = await state.pool.engine_for(record.model, deployment=record.name)
    if engine is None or not engine.ready:
        raise ServiceUnavailable()
    return ResolvedDeployment(record, engine)


async def get_deployment(
    state: StateDep,
    _version: ApiVersionDep,
    deployment_id: Annotated[str, Path()],
) -> ResolvedDeployment:
    """The deployment named in the path, for chat completions."""
    return await resolve_deployment(state, deployment_id)


def get_v1_api_version(request: Request) -> ApiVersion:
    """The ``api-version`` of a ``/openai/v1`` route: none, ``v1`` or ``preview`` (§1.4)."""
    version = parse_v1_api_version(request.query_params.get("api-version"))
    if version is None:
        raise UnsupportedApiVersion()
    return version


V1ApiVersionDep = Annotated[ApiVersion, Depends(get_v1_api_version)]


DeploymentDep = Annotated[ResolvedDeployment, Depends(get_deployment)]


async def get_completion_deployment(
    state: StateDep,
    _version: ApiVersionDep,
    deployment_id: Annotated[str, Path()],
) -> ResolvedDeployment:
    """The deployment named in the path, for legacy completions."""
    return await resolve_deployment(state, deployment_id, "completion")


CompletionDeploymentDep = Annotated[ResolvedDeployment, Depends(get_completion_deployment)]


@dataclass(frozen=True)
class ResolvedEmbeddingDeployment:
    """A deployment and the embedding engine that serves its model."""

    record: DeploymentRecord
    engine: EmbeddingEngine


async def resolve_embedding_deployment(state: AppState, name: str) -> ResolvedEmbeddingDeployment:
    """Like :func:`resolve_deployment`, for a deployment of an embedding model."""
    record = await _find_record(state, name, "embeddings")
    engine = state.embedders.get(record.model)
    if engine is None or not engine.ready:
        raise ServiceUnavailable()
    return ResolvedEmbeddingDeployment(record, engine)


async def get_embedding_deployment(
    state: StateDep,
    _version: ApiVersionDep,
    deployment_id: Annotated[str, Path()],
) -> ResolvedEmbeddingDeployment:
    """The deployment named in the path, for embeddings."""
    return await resolve_embedding_deployment(state, deployment_id)


EmbeddingDeploymentDep = Annotated[ResolvedEmbeddingDeployment, Depends(get_embedding_deployment)]
