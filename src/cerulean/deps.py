"""Request dependencies as ``Annotated`` aliases, so handler signatures read as types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from cerulean.apiversions import ApiVersion, parse_api_version
from cerulean.engines.base import Engine
from cerulean.errors import DeploymentNotFound, ResourceNotFound, ServiceUnavailable
from cerulean.state import AppState
from cerulean.store.base import DeploymentRecord

__all__ = ["ApiVersionDep", "DeploymentDep", "ResolvedDeployment", "StateDep"]


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


async def get_deployment(
    state: StateDep,
    _version: ApiVersionDep,
    deployment_id: Annotated[str, Path()],
) -> ResolvedDeployment:
    """The deployment named in the path (404 DeploymentNotFound), ready to serve (else 503)."""
    if state.store is None:
        raise ServiceUnavailable()
    record = await run_in_threadpool(state.store.get_deployment, deployment_id)
    if record is None:
        raise DeploymentNotFound()
    engine = state.engines.get(record.model)
    if engine is None or not engine.ready:
        raise ServiceUnavailable()
    return ResolvedDeployment(record, engine)


DeploymentDep = Annotated[ResolvedDeployment, Depends(get_deployment)]
