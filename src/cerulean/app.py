"""The application factory and its lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from cerulean import __version__
from cerulean.api import chat, completions, embeddings, health, management, metrics, models, v1
from cerulean.engines.base import Engine
from cerulean.engines.embedding import EmbeddingEngine
from cerulean.errors import (
    APIError,
    InternalServerError,
    InvalidRequest,
    RequestTooLarge,
    ResourceNotFound,
)
from cerulean.middleware import (
    AuthMiddleware,
    BodyLimitMiddleware,
    NormalizePathMiddleware,
    RequestContextMiddleware,
    error_response,
)
from cerulean.protocol.common import validation_message
from cerulean.quota.admission import build_limiter
from cerulean.services.deployments import (
    BUILTIN_EMBEDDING_DEPLOYMENTS,
    ensure_builtin_deployments,
)
from cerulean.services.keys import KeyRing, provision_keys
from cerulean.services.models import ensure_models, resident_records
from cerulean.services.pool import EngineFactory, EnginePool
from cerulean.settings import Settings
from cerulean.state import AppState
from cerulean.store.base import Store
from cerulean.store.sql import SqlStore

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

ReadyCallback = Callable[[AppState], None]


def create_app(
    settings: Settings,
    engines: dict[str, Engine],
    *,
    default_model: tuple[str, str] | None = None,
    store: Store | None = None,
    on_ready: ReadyCallback | None = None,
    engine_factory: EngineFactory | None = None,
    embedders: dict[str, EmbeddingEngine] | None = None,
    embedding_model: tuple[str, str] | None = None,
) -> FastAPI:
    """Build the app serving ``engines`` and ``embedders`` (keyed by model name).

    ``default_model`` is the ``(model, version)`` the built-in deployments are bound to (default:
    the first engine's model); ``embedding_model`` likewise for ``text-embedding-ada-002``
    (default: the first embedder's, if any). Engines load in the background once the server
    runs; ``/healthz`` answers 503 until they have, then ``on_ready`` is called.
    ``engine_factory`` builds engines for registered catalog models that deployments use (loaded
    and unloaded as they come and go).
    """
    state = AppState(settings=settings, engines=engines, embedders=dict(embedders or {}))
    model, version = default_model or (next(iter(engines)), "1")
    if embedding_model is None and state.embedders:
        embedding_model = (next(iter(state.embedders)), "1")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = store if store is not None else await asyncio.to_thread(_open_store, settings)
        keys = await asyncio.to_thread(provision_keys, opened, settings)
        state.verifier = keys.verifier
        state.shown_keys = keys.shown
        await asyncio.to_thread(ensure_models, opened, resident_records(engines))
        await asyncio.to_thread(ensure_builtin_deployments, opened, model, version)
        state.keyring = KeyRing(keys.verifier, opened, ttl=settings.key_cache_seconds)
        state.pool = EnginePool(state.engines, opened, engine_factory)
        if embedding_model is not None:
            await asyncio.to_thread(
                ensure_builtin_deployments, opened, *embedding_model, BUILTIN_EMBEDDING_DEPLOYMENTS
            )
        state.store = opened
        state.limiter = build_limiter(settings)
        loader = asyncio.create_task(_load_engines(state, on_ready))
        reconciler = asyncio.create_task(state.pool.run(settings.reconcile_interval))
        try:
            yield
        finally:
            loader.cancel()
            reconciler.cancel()
            await state.pool.aclose()
            for engine in list(engines.values()):
                await engine.aclose()
            await state.limiter.aclose()
            for embedder in state.embedders.values():
                await embedder.aclose()
            opened.close()

    app = FastAPI(
        title="Cerulean", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.cerulean = state
    app.include_router(health.router)
    app.include_router(chat.router)
    app.include_router(embeddings.router)
    app.include_router(completions.router)
    app.include_router(metrics.router)
    app.include_router(models.router)
    app.include_router(v1.router)
    app.include_router(management.router)
    _install_error_handlers(app)
    # Added innermost first: requests pass RequestContext → NormalizePath → Auth → BodyLimit.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(
        AuthMiddleware,
        verifier=lambda: state.verifier,
        public=health.PUBLIC_PATHS,
        refresh=lambda failed: _refresh_keys(state, failed),
        own_auth=(management.PREFIX,),
    )
    app.add_middleware(NormalizePathMiddleware)
    app.add_middleware(RequestContextMiddleware, region=settings.region)
    return app


async def _refresh_keys(state: AppState, failed: bool) -> bool:
    return state.keyring is not None and await state.keyring.refresh(failed=failed)


def _open_store(settings: Settings) -> Store:
    settings.home.mkdir(parents=True, exist_ok=True)
    return SqlStore(settings.store_url)


async def _load_engines(state: AppState, on_ready: ReadyCallback | None) -> None:
    loadable: list[Engine | EmbeddingEngine] = [*state.engines.values(), *state.embedders.values()]
    for engine in loadable:  # a copy: the pool may add engines meanwhile
        try:
            await asyncio.to_thread(engine.load)
        except Exception:
            logger.exception("could not load model %s", engine.info.name)
            return
    logger.info("ready: serving %s", ", ".join([*state.engines, *state.embedders]))
    if on_ready is not None:
        on_ready(state)


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return error_response(exc)

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code in (404, 405):
            return error_response(ResourceNotFound())
        if exc.status_code == 413:
            return error_response(RequestTooLarge(0))
        return error_response(InvalidRequest(str(exc.detail)))

    async def validation_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        message, param = validation_message(exc.errors()[0])
        return error_response(InvalidRequest(message, param=param))

    async def unexpected(request: Request, exc: Exception) -> Response:
        rid = getattr(request.state, "request_id", "unknown")
        logger.error("unhandled error (request %s)", rid, exc_info=exc)
        return error_response(InternalServerError(rid))

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
