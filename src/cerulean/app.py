"""The application factory and its lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from cerulean import __version__
from cerulean.api import (
    batches,
    chat,
    completions,
    embeddings,
    files,
    health,
    issuer,
    management,
    metrics,
    models,
    responses,
    studio,
    v1,
)
from cerulean.api.access import AccessMiddleware, RequestMetrics
from cerulean.api.middleware import (
    AuthMiddleware,
    BodyLimitMiddleware,
    NormalizePathMiddleware,
    RequestContextMiddleware,
    error_response,
)
from cerulean.engines.base import Engine
from cerulean.engines.embedding import EmbeddingEngine
from cerulean.errors import (
    APIError,
    InternalServerError,
    InvalidRequest,
    RequestTooLarge,
    ResourceNotFound,
)
from cerulean.protocol.common import validation_message
from cerulean.quota import build_limiter
from cerulean.services.batches import BatchRunner, BatchService, responses_handler
from cerulean.services.deployments import (
    BUILTIN_EMBEDDING_DEPLOYMENTS,
    ensure_builtin_deployments,
)
from cerulean.services.files import FileService
from cerulean.services.filtering.classifiers import WindowCache
from cerulean.services.filtering.pipeline import ContentSafety, harm_classifier
from cerulean.services.gateway import Gateway
from cerulean.services.identity import build_entra
from cerulean.services.keys import KeyRing, provision_keys
from cerulean.services.models import ensure_models, resident_records
from cerulean.services.pool import EngineFactory, EnginePool
from cerulean.services.responses import ResponsesContext, prepare_store, upkeep
from cerulean.services.studio import StudioSessions, sign_in_secret
from cerulean.services.telemetry import Telemetry, build_telemetry
from cerulean.services.usage import UsageRecorder
from cerulean.settings import Settings
from cerulean.state import AppState
from cerulean.store.base import Store
from cerulean.store.batches import JobStore
from cerulean.store.home import open_store
from cerulean.store.sql import SqlStore

__all__ = ["Served", "create_app"]

logger = logging.getLogger(__name__)

ReadyCallback = Callable[[AppState], None]


@dataclass(frozen=True)
class Served:
    """What a server runs: its resident engines, and the models its built-in deployments use.

    ``default_model`` is the ``(model, version)`` of ``gpt-35-turbo`` and ``gpt-4`` (default:
    the first engine's model); ``embedding_model`` likewise for ``text-embedding-ada-002``
    (default: the first embedder's, if any). ``engine_factory`` builds the engines of registered
    catalog models that deployments use (loaded and unloaded as they come and go).
    """

    engines: dict[str, Engine]
    embedders: dict[str, EmbeddingEngine] = field(default_factory=dict)
    default_model: tuple[str, str] | None = None
    embedding_model: tuple[str, str] | None = None
    engine_factory: EngineFactory | None = None

    @property
    def chat_model(self) -> tuple[str, str] | None:
        """The model of the built-in chat deployments; None for a pure gateway (no engine)."""
        if self.default_model is not None:
            return self.default_model
        return (next(iter(self.engines)), "1") if self.engines else None

    @property
    def embeddings_model(self) -> tuple[str, str] | None:
        if self.embedding_model is None and self.embedders:
            return next(iter(self.embedders)), "1"
        return self.embedding_model


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
    """Build the app serving ``engines`` and ``embedders`` (keyed by model name); see
    :class:`Served` for the other arguments.

    Engines load in the background once the server runs; ``/healthz`` answers 503 until they
    have, then ``on_ready`` is called.
    """
    served = Served(engines, dict(embedders or {}), default_model, embedding_model, engine_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = store if store is not None else await asyncio.to_thread(_open_store, settings)
        state = await _build_state(settings, opened, served)
        app.state.cerulean = state
        loader = asyncio.create_task(_load_engines(state, on_ready))
        reconciler = asyncio.create_task(state.pool.run(settings.reconcile_interval))
        gateway = state.pool.gateway
        assert gateway is not None
        checker = asyncio.create_task(gateway.run(settings.upstream_health_interval))
        stored = ResponsesContext.of(state)
        await prepare_store(stored)
        upkeeper = asyncio.create_task(upkeep(stored, settings.response_purge_interval))
        recorder = None if state.usage is None else asyncio.create_task(state.usage.run())
        tasks = [loader, reconciler, checker, upkeeper]
        if settings.batch_runner:
            tasks.append(asyncio.create_task(state.runner.run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await state.responses.aclose()
            if recorder is not None:  # its last flush: what the final requests used
                recorder.cancel()
                await asyncio.gather(recorder, return_exceptions=True)
            await _close(state, served)

    app = FastAPI(
        title="Cerulean",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,  # never a Host-built redirect (NormalizePathMiddleware)
    )
    modules = (
        health, chat, embeddings, completions, metrics, models, v1, responses, management,
        issuer, files, batches,
    )  # fmt: skip
    for module in modules:
        app.include_router(module.router)
    if settings.studio:
        app.include_router(studio.router)
    _install_error_handlers(app)
    studio.install(app)
    app.state.request_metrics = RequestMetrics()
    _install_middleware(app, settings)
    return app


async def _build_state(settings: Settings, store: Store, served: Served) -> AppState:
    """The app's state, complete: keys provisioned, the catalog and built-in deployments
    written, the engine pool and rate limiter made."""
    keys = await asyncio.to_thread(provision_keys, store, settings)
    await asyncio.to_thread(
        ensure_models, store, resident_records(served.engines, served.embedders)
    )
    if served.chat_model is not None:
        await asyncio.to_thread(ensure_builtin_deployments, store, *served.chat_model)
    if served.embeddings_model is not None:
        await asyncio.to_thread(
            ensure_builtin_deployments,
            store,
            *served.embeddings_model,
            BUILTIN_EMBEDDING_DEPLOYMENTS,
        )
    pool = EnginePool(
        dict(served.engines),
        store,
        served.engine_factory,
        embedders=served.embedders,
        gateway=Gateway(store, settings),
    )
    keyring = KeyRing(keys.verifier, store, ttl=settings.key_cache_seconds)
    await keyring.reload()  # the account's disableLocalAuth too
    entra = await asyncio.to_thread(build_entra, settings, store)
    limiter = build_limiter(
        settings.redis_url,
        prefix=settings.redis_prefix,
        timeout=settings.redis_timeout,
        fail_open=settings.redis_outage == "open",
    )
    if not isinstance(store, SqlStore):
        raise TypeError("files and batches need the SQL store")
    jobs = JobStore(store.engine)
    windows = WindowCache()  # the harm classifier's windows already read
    content_safety = ContentSafety(
        store,
        harm=lambda: harm_classifier(served.embedders, windows),
        ttl=settings.content_filter_cache_seconds,
    )
    file_service = FileService(settings, jobs)
    runner = BatchRunner(
        settings, store, jobs, file_service, pool, limiter, content_safety=content_safety
    )
    state = AppState(
        settings=settings,
        store=store,
        pool=pool,
        keyring=keyring,
        entra=entra,
        limiter=limiter,
        content_safety=content_safety,
        files=file_service,
        batches=BatchService(jobs, file_service, runner.wake),
        runner=runner,
        shown_keys=keys.shown,
        studio=await asyncio.to_thread(_studio_sessions, settings) if settings.studio else None,
        usage=(
            UsageRecorder(
                store,
                retention_days=settings.usage_retention_days,
                interval=settings.usage_flush_interval,
            )
            if settings.usage_accounting
            else None
        ),
        telemetry=build_telemetry(settings),
    )
    runner.handlers["responses"] = responses_handler(state)  # /v1/responses batch lines
    return state


def _studio_sessions(settings: Settings) -> StudioSessions:
    return StudioSessions(sign_in_secret(settings), lifetime=settings.studio_session_seconds)


async def _close(state: AppState, served: Served) -> None:
    if state.telemetry is not None:
        await asyncio.to_thread(state.telemetry.shutdown)
    await state.pool.aclose()
    if state.pool.gateway is not None:
        await state.pool.gateway.aclose()
    for engine in list(state.engines.values()):
        await engine.aclose()
    await state.limiter.aclose()
    if state.entra is not None:
        await state.entra.aclose()
    for embedder in state.embedders.values():
        await embedder.aclose()
    state.store.close()


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    def state() -> AppState:
        current: AppState = app.state.cerulean
        return current

    async def refresh(failed: bool) -> bool:
        return await state().keyring.refresh(failed=failed)

    # Added innermost first: requests pass Access → RequestContext → NormalizePath → Auth →
    # BodyLimit.
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_body_bytes,
        larger={path: settings.upload_body_limit for path in files.UPLOAD_PATHS},
    )
    app.add_middleware(
        AuthMiddleware,
        verifier=lambda: state().keyring.verifier,
        public=health.PUBLIC_PATHS | {issuer.PATH},  # a JWKS is public
        entra=lambda: state().entra,
        local_auth_disabled=lambda: state().keyring.local_auth_disabled,
        refresh=refresh,
        # /metrics: a key or the metrics token; /studio: its own session cookie
        own_auth=(management.PREFIX, metrics.PATH, studio.PREFIX),
    )
    app.add_middleware(NormalizePathMiddleware)
    app.add_middleware(RequestContextMiddleware, region=settings.region)

    def observers() -> tuple[UsageRecorder | None, Telemetry | None]:
        current: AppState | None = getattr(app.state, "cerulean", None)
        return (None, None) if current is None else (current.usage, current.telemetry)

    app.add_middleware(AccessMiddleware, metrics=app.state.request_metrics, observers=observers)


def _open_store(settings: Settings) -> Store:
    return open_store(settings)  # the home 0700, the SQLite file 0600


async def _load_engines(state: AppState, on_ready: ReadyCallback | None) -> None:
    loadable: list[Engine | EmbeddingEngine] = list(state.served.values())
    for engine in loadable:  # a copy: the pool may add engines meanwhile
        try:
            await asyncio.to_thread(engine.load)
        except Exception:
            logger.exception("could not load model %s", engine.info.name)
            return
    logger.info("ready: serving %s", ", ".join(state.served))
    if on_ready is not None:
        on_ready(state)


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code in (404, 405):
            logger.debug(
                "404 for %s %s: no such route (%s)",
                request.method,
                request.url.path,
                "the path exists for other methods" if exc.status_code == 405 else "unknown path",
            )
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
