"""Which models a running server holds in memory, following the deployments in the store.

The CLI and the server are separate processes sharing only the store, so the server follows it
(docs/deployments.md, "How a running server follows changes"):

- **On demand.** A request to a deployment whose model is not loaded starts loading it (once,
  however many requests ask) and waits up to ``load_wait`` seconds; past that it gets a 503 with
  ``retry-after`` (openai 1.x retries it by itself).
- **Reconciling.** Every ``reconcile_interval`` seconds (and at once after a management API
  call) the server compares the store's deployments with what it holds: a deployed model that
  is not loaded starts loading; a loaded model no deployment uses any more is unloaded once its
  running requests have finished (new requests cannot reach it: their deployment is gone).

Models the server was started with (resident: the embedded model, ``--model``) are never
unloaded. Everything here runs on the event loop; the only blocking calls (store reads,
``Engine.load``, ``Engine.aclose``) go to threads, so plain dictionaries are race-free.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from cerulean.engines.base import Engine
from cerulean.engines.embedding import EmbeddingEngine
from cerulean.errors import DeploymentNotFound, OperationNotSupported, ServiceUnavailable
from cerulean.packaged import EMBEDDING_MODEL_NAME
from cerulean.protocol.capabilities import NAMES, Capability
from cerulean.services import accounting
from cerulean.services.gateway import Gateway
from cerulean.store.base import DeploymentRecord, ModelRecord, Store

__all__ = ["EngineFactory", "EnginePool", "ResolvedDeployment", "Served"]

logger = logging.getLogger(__name__)

Served = Engine | EmbeddingEngine
# Builds the engine of a registered GGUF: a generator, or an embedder for an embedding model.
EngineFactory = Callable[[ModelRecord], Served]

# Seconds a request waits for its model to load before the 503 (a small GGUF loads in ~1 s).
LOAD_WAIT_S = 5.0
# What the 503 of a loading model tells clients to wait.
LOADING_RETRY_AFTER_S = 2.0
# Seconds an unloading model keeps serving requests that resolved it just before, then the
# longest it waits for running requests to finish.
DRAIN_GRACE_S = 1.0
DRAIN_TIMEOUT_S = 600.0
# A model that failed to load is not tried again for this long (its 503 says why).
RETRY_FAILED_AFTER_S = 30.0
# A deployment is read from the store at most this often (as upstream records and keys are);
# a write by this process is seen at once. The read costs a thread hop and a query per request.
DEPLOYMENT_TTL_S = 1.0
_RECORDS_KEPT = 1024


@dataclass(frozen=True)
class ResolvedDeployment:
    """A deployment and the engine that serves its model, ready for requests."""

    record: DeploymentRecord
    engine: Engine | EmbeddingEngine

    @property
    def generator(self) -> Engine:
        """The engine as a text generator (chat, completions)."""
        if not isinstance(self.engine, Engine):
            raise OperationNotSupported(NAMES["chat_completion"].operation, self.engine.info.name)
        return self.engine

    @property
    def embedder(self) -> EmbeddingEngine:
        """The engine as an embedder."""
        if not isinstance(self.engine, EmbeddingEngine):
            raise OperationNotSupported(NAMES["embeddings"].operation, self.engine.info.name)
        return self.engine


def _check(served: Engine | EmbeddingEngine, needs: Capability) -> None:
    if needs not in served.info.capabilities:
        raise OperationNotSupported(NAMES[needs].operation, served.info.name)


def _busy(engine: Served) -> bool:
    if not isinstance(engine, Engine):
        return False  # an embedding call is short: the grace period covers it
    stats = engine.stats()
    return bool(stats.get("slots_busy", 0) or stats.get("waiting", 0))


class EnginePool:
    """Loads and unloads the models of deployments; ``engines`` is the app's dict of loaded ones.

    ``embedders`` are the embedding engines the server was started with (resident).
    """

    def __init__(
        self,
        engines: dict[str, Engine],
        store: Store,
        factory: EngineFactory | None,
        *,
        embedders: dict[str, EmbeddingEngine] | None = None,
        gateway: Gateway | None = None,
        load_wait: float = LOAD_WAIT_S,
        drain_grace: float = DRAIN_GRACE_S,
        drain_timeout: float = DRAIN_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engines = engines
        self.embedders = embedders if embedders is not None else {}
        self.gateway = gateway
        self.resident = frozenset(engines) | frozenset(self.embedders)
        self._store = store
        self._factory = factory
        self._load_wait = load_wait
        self._drain_grace = drain_grace
        self._drain_timeout = drain_timeout
        self._clock = clock
        self._loading: dict[str, asyncio.Task[Served]] = {}
        self._draining: dict[str, tuple[Served, asyncio.Task[None]]] = {}
        self._failed: dict[str, tuple[float, str]] = {}
        # name -> (read at, the store's deployment writes then, the record or None)
        self._records: dict[str, tuple[float, int, DeploymentRecord | None]] = {}
        self._warned: set[str] = set()  # models whose unavailability was logged as a warning

    @property
    def loading(self) -> frozenset[str]:
        """Models being loaded now."""
        return frozenset(self._loading)

    @property
    def draining(self) -> frozenset[str]:
        """Models being unloaded once their requests finish."""
        return frozenset(self._draining)

    async def _deployment(self, name: str) -> DeploymentRecord | None:
        """The stored deployment ``name``, read at most every :data:`DEPLOYMENT_TTL_S` (a change
        made by another process is in force within it; one made by this process at once)."""
        writes = self._store.deployment_writes
        cached = self._records.get(name)
        now = time.monotonic()
        if cached is not None and cached[1] == writes and now - cached[0] < DEPLOYMENT_TTL_S:
            return cached[2]
        record = await run_in_threadpool(self._store.get_deployment, name)
        if len(self._records) >= _RECORDS_KEPT:  # names that were asked for once, or made up
            self._records.clear()
        self._records[name] = (now, writes, record)
        return record

    async def resolve(self, name: str, needs: Capability) -> ResolvedDeployment:
        """The deployment called ``name`` and its engine, ready to serve.

        404 DeploymentNotFound for an unknown name; Azure's 400 OperationNotSupported (naming
        the model) when the model cannot do ``needs``; 503 with ``retry-after`` while the model
        loads.
        """
        record = await self._deployment(name)
        if record is None or record.name != name:  # the data plane matches names exactly (§10)
            raise DeploymentNotFound()
        accounting.current().deployment = record.name
        accounting.current().operation = needs
        if record.upstreams:
            if self.gateway is None:
                raise ServiceUnavailable("This server does not route to upstreams.")
            remote = await self.gateway.engine_for(record)
            _check(remote, needs)
            return ResolvedDeployment(record, remote)
        served: Served | None = self.embedders.get(record.model)
        if served is None:
            served = self.engines.get(record.model)
        if served is not None:
            _check(served, needs)
        if served is None or record.model not in self.resident:
            # Loads the model of a deployment created since the server started.
            served = await self.engine_for(record.model, deployment=record.name)
            _check(served, needs)
        if not served.ready:
            raise ServiceUnavailable(retry_after=1)
        return ResolvedDeployment(record, served)

    async def engine_for(self, model: str, *, deployment: str) -> Served:
        """The loaded engine of ``model``; loads it if needed (503 + retry-after while it does)."""
        engine: Served | None = self.engines.get(model) or self.embedders.get(model)
        if engine is None and model in self._draining:
            engine = self._revive(model)
        if engine is not None:
            if not engine.ready:  # a resident model still loading at start
                raise ServiceUnavailable(retry_after=1)
            return engine
        task = self._load_task(model, reason=f"deployment {deployment}")
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._load_wait)
        except asyncio.TimeoutError:
            raise ServiceUnavailable(
                f"The model {model} of deployment {deployment} is being loaded. Please retry "
                "in a few seconds.",
                retry_after=LOADING_RETRY_AFTER_S,
            ) from None

    def unusable(self, model: str) -> str | None:
        """Why a deployment of local ``model`` cannot be served now (readiness), or None."""
        served = self.embedders.get(model) or self.engines.get(model)
        if served is not None:
            return None if served.ready else f"model {model} is loading"
        if model in self._loading:
            return f"model {model} is loading"
        failed = self._failed.get(model)
        if failed is not None:
            return failed[1]
        return f"model {model} is not loaded"

    def prefetch(self, model: str, *, reason: str) -> None:
        """Start loading ``model`` if it is not loaded (a deployment was just created)."""
        if not self._loaded(model) and model not in self._draining:
            self._load_task(model, reason=reason)

    def _loaded(self, model: str) -> bool:
        return model in self.engines or model in self.embedders

    async def reconcile(self) -> None:
        """Load deployed models that are not loaded; unload loaded ones no deployment uses."""
        deployments = await run_in_threadpool(self._store.list_deployments)
        deployed = {d.model: d.name for d in deployments if not d.upstreams}
        for model, name in deployed.items():
            if not self._loaded(model) and not self._failed_recently(model):
                self.prefetch(model, reason=f"deployment {name}")
        for model in [*self.engines, *self.embedders]:
            if model not in self.resident and model not in deployed:
                self._unload(model)

    async def run(self, interval: float) -> None:
        """Reconcile every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reconcile()
            except Exception:
                logger.exception("could not reconcile loaded models with the store")

    async def aclose(self) -> None:
        """Stop loading and draining; close the engines being drained (the app closes the rest)."""
        for loading in self._loading.values():
            loading.cancel()
        for engine, drain in list(self._draining.values()):
            drain.cancel()
            await engine.aclose()
        self._draining.clear()

    # -- loading ------------------------------------------------------------------------------

    def _failed_recently(self, model: str) -> bool:
        failed = self._failed.get(model)
        return failed is not None and self._clock() - failed[0] < RETRY_FAILED_AFTER_S

    def _load_task(self, model: str, *, reason: str) -> asyncio.Task[Served]:
        # No await between the lookup and the insert: one load per model, however many ask.
        task = self._loading.get(model)
        if task is None:
            task = asyncio.create_task(self._load(model, reason))
            task.add_done_callback(_retrieve)
            self._loading[model] = task
        return task

    async def _load(self, model: str, reason: str) -> Served:
        try:
            failed = self._failed.get(model)
            if failed is not None and self._failed_recently(model):
                raise ServiceUnavailable(failed[1], retry_after=RETRY_FAILED_AFTER_S)
            record = await run_in_threadpool(self._store.get_model, model)
            engine = self._build(model, record)
            logger.info("loading model %s from %s for %s", model, record and record.path, reason)
            started = time.perf_counter()
            try:
                await asyncio.to_thread(engine.load)
            except Exception as exc:
                message = (
                    f"The model {model} could not be loaded ({exc.__class__.__name__}: {exc}); "
                    "see the server log."
                )
                logger.exception("could not load model %s", model)
                self._failed[model] = (self._clock(), message)
                raise ServiceUnavailable(message, retry_after=RETRY_FAILED_AFTER_S) from None
            self._failed.pop(model, None)
            self._warned.discard(model)
            self._put(model, engine)
            logger.info("loaded model %s in %.1f s", model, time.perf_counter() - started)
            return engine
        finally:
            self._loading.pop(model, None)

    def _put(self, model: str, engine: Served) -> None:
        if isinstance(engine, Engine):
            self.engines[model] = engine
        else:
            self.embedders[model] = engine

    def _build(self, model: str, record: ModelRecord | None) -> Served:
        if record is None or record.path is None or self._factory is None:
            if record is not None and record.path is None:  # another server's resident model
                why = "a model another server runs by itself, not this one"
                if model == EMBEDDING_MODEL_NAME:
                    why += " (this one was started with --no-embeddings or --no-embedded)"
            else:
                why = (
                    "neither a registered GGUF file (cerulean models add) nor a model this "
                    "server was started with"
                )
            message = f"The model {model} is not available on this server: it is {why}."
            self._failed[model] = (self._clock(), message)
            # Said once per model: the reconciler retries every 30 s, and the cause does not
            # change by itself (each refused request still gets the message in its 503).
            log = logger.debug if model in self._warned else logger.warning
            self._warned.add(model)
            log("%s", message)
            raise ServiceUnavailable(message, retry_after=RETRY_FAILED_AFTER_S)
        return self._factory(record)

    # -- unloading ----------------------------------------------------------------------------

    def _unload(self, model: str) -> None:
        engine: Served = (
            self.engines.pop(model) if model in self.engines else self.embedders.pop(model)
        )
        logger.info("unloading model %s: no deployment uses it any more", model)
        task = asyncio.create_task(self._drain(model, engine))
        task.add_done_callback(_retrieve)
        self._draining[model] = (engine, task)

    def _revive(self, model: str) -> Served:
        engine, task = self._draining.pop(model)
        task.cancel()
        self._put(model, engine)
        logger.info("keeping model %s loaded: a deployment uses it again", model)
        return engine

    async def _drain(self, model: str, engine: Served) -> None:
        await asyncio.sleep(self._drain_grace)
        deadline = self._clock() + self._drain_timeout
        while _busy(engine) and self._clock() < deadline:
            await asyncio.sleep(0.2)
        # From here on the engine cannot be revived (no await between these two lines).
        self._draining.pop(model, None)
        await engine.aclose()
        logger.info("unloaded model %s", model)


def _retrieve(task: asyncio.Task[object]) -> None:
    # Failures were logged where they happened; reading them keeps asyncio from warning.
    if not task.cancelled():
        task.exception()
