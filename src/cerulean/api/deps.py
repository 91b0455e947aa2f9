"""Request dependencies as ``Annotated`` aliases, so handler signatures read as types."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Annotated, TypeVar

from fastapi import Depends, Path, Request

from cerulean.engines.base import Engine
from cerulean.engines.embedding import EmbeddingEngine
from cerulean.errors import InvalidRequest, ResourceNotFound, UnsupportedApiVersion
from cerulean.protocol.apiversions import (
    KNOWN_API_VERSIONS,
    ApiVersion,
    parse_api_version,
    parse_v1_api_version,
)
from cerulean.protocol.capabilities import Capability
from cerulean.services.admission import Quota
from cerulean.services.answers import InferenceCall
from cerulean.services.pool import ResolvedDeployment
from cerulean.state import AppState

E = TypeVar("E", Engine, EmbeddingEngine)
logger = logging.getLogger(__name__)

__all__ = [
    "ApiVersionDep",
    "ChatDeploymentDep",
    "CompletionDeploymentDep",
    "EmbeddingDeploymentDep",
    "StateDep",
    "V1ApiVersionDep",
    "api_version_of",
    "page_limit",
    "state_of",
    "v1_api_version_of",
    "chat_call",
    "embedding_call",
]


# The dependencies are ``async def`` although none of them awaits: FastAPI runs a plain ``def``
# dependency in its thread pool, two thread hops on every request for a dictionary lookup.


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.cerulean
    return state


async def get_state(request: Request) -> AppState:
    return state_of(request)


StateDep = Annotated[AppState, Depends(get_state)]


def api_version_of(request: Request) -> ApiVersion:
    """The request's ``api-version``; missing or unknown ones get Azure's 404 (§1.5)."""
    text = request.query_params.get("api-version")
    version = parse_api_version(text)
    if version is None:
        logger.debug(
            "404 for %s %s: %s; this route serves api-version %s to %s",
            request.method,
            request.url.path,
            "no api-version given" if text is None else f"api-version {text!r} is not known",
            KNOWN_API_VERSIONS[0],
            KNOWN_API_VERSIONS[-1],
        )
        raise ResourceNotFound()
    return version


def v1_api_version_of(request: Request) -> ApiVersion:
    """The ``api-version`` of a ``/openai/v1`` route: none, ``v1`` or ``preview`` (§1.4)."""
    version = parse_v1_api_version(request.query_params.get("api-version"))
    if version is None:
        raise UnsupportedApiVersion()
    return version


async def get_api_version(request: Request) -> ApiVersion:
    return api_version_of(request)


async def get_v1_api_version(request: Request) -> ApiVersion:
    return v1_api_version_of(request)


def page_limit(value: int | None, *, default: int, most: int) -> int:
    """A list route's ``limit`` query: ``default`` when absent, else 1 to ``most`` (a 400)."""
    if value is None:
        return default
    if not 1 <= value <= most:
        raise InvalidRequest(
            f"Invalid value for 'limit': {value}. It must be between 1 and {most}.", param="limit"
        )
    return value


ApiVersionDep = Annotated[ApiVersion, Depends(get_api_version)]
V1ApiVersionDep = Annotated[ApiVersion, Depends(get_v1_api_version)]


def _deployment_in_path(
    needs: Capability,
) -> Callable[[AppState, ApiVersion, str], Awaitable[ResolvedDeployment]]:
    """The dependency resolving the path's deployment for an operation that ``needs``."""

    async def resolve(
        state: StateDep, _version: ApiVersionDep, deployment_id: Annotated[str, Path()]
    ) -> ResolvedDeployment:
        return await state.pool.resolve(deployment_id, needs)

    return resolve


ChatDeploymentDep = Annotated[ResolvedDeployment, Depends(_deployment_in_path("chat_completion"))]
CompletionDeploymentDep = Annotated[ResolvedDeployment, Depends(_deployment_in_path("completion"))]
EmbeddingDeploymentDep = Annotated[ResolvedDeployment, Depends(_deployment_in_path("embeddings"))]


def _quota(request: Request, version: ApiVersion) -> Quota:
    state = state_of(request)
    return Quota(
        state.limiter,
        state.clock,
        version.text,
        max_answer_tokens=state.settings.max_answer_tokens,
    )


def _call(
    request: Request, version: ApiVersion, deployment: ResolvedDeployment, engine: E
) -> InferenceCall[E]:
    return InferenceCall(
        deployment.record, engine, version, _quota(request, version), request.state.request_id
    )


async def chat_call(
    request: Request, version: ApiVersion, deployment: ResolvedDeployment
) -> InferenceCall[Engine]:
    """What the chat and completions services need to serve ``deployment``, its content
    filter included."""
    call = _call(request, version, deployment, deployment.generator)
    content_filter = await state_of(request).content_safety.filter_for(deployment.record)
    return replace(call, content_filter=content_filter)


def embedding_call(
    request: Request, version: ApiVersion, deployment: ResolvedDeployment
) -> InferenceCall[EmbeddingEngine]:
    """What the embeddings service needs to serve ``deployment``."""
    return _call(request, version, deployment, deployment.embedder)
