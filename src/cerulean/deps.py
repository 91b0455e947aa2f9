"""Request dependencies as ``Annotated`` aliases, so handler signatures read as types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from cerulean.apiversions import ApiVersion, parse_api_version, parse_v1_api_version
from cerulean.engines.base import Engine
from cerulean.errors import (
    DeploymentNotFound,
    ResourceNotFound,
    ServiceUnavailable,
    UnsupportedApiVersion,
)
from cerulean.state import AppState
from cerulean.store.base import DeploymentRecord

__all__ = [
    "ApiVersionDep",
    "DeploymentDep",
    "ResolvedDeployment",
    "StateDep",
    "V1ApiVersionDep",
    "resolve_deployment",
]


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


async def resolve_deployment(state: AppState, name: str) -> ResolvedDeployment:
    """The deployment called ``name`` (404 DeploymentNotFound), ready to serve (else 503)."""
    if state.store is None:
        raise ServiceUnavailable()
    record = await run_in_threadpool(state.store.get_deployment, name)
    if record is None:
        raise DeploymentNotFound()
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
    """The deployment named in the path."""
    return await resolve_deployment(state, deployment_id)


def get_v1_api_version(request: Request) -> ApiVersion:
    """The ``api-version`` of a ``/openai/v1`` route: none, ``v1`` or ``preview`` (§1.4)."""
    version = parse_v1_api_version(request.query_params.get("api-version"))
    if version is None:
        raise UnsupportedApiVersion()
    return version


V1ApiVersionDep = Annotated[ApiVersion, Depends(get_v1_api_version)]


DeploymentDep = Annotated[ResolvedDeployment, Depends(get_deployment)]
