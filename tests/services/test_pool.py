"""EnginePool: loading on demand, following the store, draining before unloading."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cerulean.engines.base import ChatMessage, Engine, GenerationRequest
from cerulean.engines.fake import FakeEngine
from cerulean.errors import DeploymentNotFound, ServiceUnavailable
from cerulean.services.pool import DEPLOYMENT_TTL_S, EnginePool
from cerulean.store.base import DeploymentRecord, ModelRecord
from cerulean.store.sql import SqlStore

NOW = datetime(2026, 11, 26, tzinfo=timezone.utc)


class SlowEngine(FakeEngine):
    """Loads when ``release`` is set; counts loads and closes."""

    def __init__(self, name: str, release: threading.Event, fail: bool = False) -> None:
        super().__init__(name=name)
        self.release = release
        self.fail = fail
        self.loads = 0
        self.closed = False

    def load(self) -> None:
        self.loads += 1
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("bad weights")
        super().load()

    async def aclose(self) -> None:
        self.closed = True
        await super().aclose()


class Factory:
    def __init__(self, *, fail: bool = False) -> None:
        self.release = threading.Event()
        self.release.set()
        self.built: list[SlowEngine] = []
        self.fail = fail

    def __call__(self, record: ModelRecord) -> Engine:
        engine = SlowEngine(record.name, self.release, self.fail)
        self.built.append(engine)
        return engine


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = SqlStore(f"sqlite:///{tmp_path / 'p.db'}")
    opened.put_model(ModelRecord("local", "/m/local.gguf", ("chat",), 4096, None, NOW))
    opened.put_model(ModelRecord("resident", None, ("chat",), 4096, None, NOW))
    yield opened
    opened.close()


def deploy(store: SqlStore, name: str, model: str) -> None:
    store.put_deployment(DeploymentRecord(name, model, "1", 10, "Standard", NOW))


def make_pool(store: SqlStore, factory: Factory, **kwargs: float) -> EnginePool:
    resident = FakeEngine(name="resident")
    resident.load()
    return EnginePool({"resident": resident}, store, factory, **kwargs)


def test_loads_once_for_many_requests(store: SqlStore) -> None:
    async def scenario() -> None:
        factory = Factory()
        pool = make_pool(store, factory)
        engines = await asyncio.gather(
            *(pool.engine_for("local", deployment="d") for _ in range(5))
        )
        assert len(factory.built) == 1 and factory.built[0].loads == 1
        assert all(e is factory.built[0] for e in engines)
        assert pool.engines["local"].ready

    asyncio.run(scenario())


def test_slow_load_answers_503_then_serves(store: SqlStore) -> None:
    async def scenario() -> None:
        factory = Factory()
        factory.release.clear()
        pool = make_pool(store, factory, load_wait=0.1)
        with pytest.raises(ServiceUnavailable) as caught:
            await pool.engine_for("local", deployment="d")
        assert caught.value.headers["retry-after"] == "2"
        assert "local of deployment d is being loaded" in caught.value.message
        assert pool.loading == {"local"}
        factory.release.set()
        engine = await pool.engine_for("local", deployment="d")
        assert engine.ready and len(factory.built) == 1

    asyncio.run(scenario())


def test_failed_load_is_reported_and_not_retried_at_once(store: SqlStore) -> None:
    async def scenario() -> None:
        factory = Factory(fail=True)
        pool = make_pool(store, factory)
        for _ in range(2):
            with pytest.raises(ServiceUnavailable, match="could not be loaded .*bad weights"):
                await pool.engine_for("local", deployment="d")
        assert len(factory.built) == 1
        with pytest.raises(ServiceUnavailable, match="not available on this server"):
            await pool.engine_for("unknown", deployment="d")

    asyncio.run(scenario())


def test_reconcile_follows_the_store(store: SqlStore) -> None:
    async def scenario() -> None:
        factory = Factory()
        pool = make_pool(store, factory, drain_grace=0.0)
        deploy(store, "d", "local")
        deploy(store, "r", "resident")
        await pool.reconcile()  # a deployment made by another process: loaded ahead
        assert pool.loading == {"local"}
        await asyncio.sleep(0.2)
        assert "local" in pool.engines
        store.delete_deployment("d")
        store.delete_deployment("r")
        await pool.reconcile()
        assert "local" not in pool.engines and pool.draining == {"local"}
        await asyncio.sleep(0.1)
        assert factory.built[0].closed and not pool.draining
        assert "resident" in pool.engines  # never unloaded

    asyncio.run(scenario())


def test_running_requests_finish_before_unloading(store: SqlStore) -> None:
    async def scenario() -> None:
        factory = Factory()
        pool = make_pool(store, factory, drain_grace=0.0)
        deploy(store, "d", "local")
        engine = await pool.engine_for("local", deployment="d")
        request = GenerationRequest((ChatMessage("user", "one two three"),))
        generation = await engine.generate(request)
        store.delete_deployment("d")
        await pool.reconcile()
        await asyncio.sleep(0.5)
        assert not factory.built[0].closed  # still generating
        text = "".join([chunk.text async for chunk in generation])
        assert text == "You said: one two three"
        await generation.aclose()
        await asyncio.sleep(0.5)
        assert factory.built[0].closed

    asyncio.run(scenario())


def test_redeploying_while_draining_keeps_the_engine(store: SqlStore) -> None:
    async def scenario() -> None:
        factory = Factory()
        pool = make_pool(store, factory, drain_grace=5.0)
        deploy(store, "d", "local")
        first = await pool.engine_for("local", deployment="d")
        store.delete_deployment("d")
        await pool.reconcile()
        assert pool.draining == {"local"}
        deploy(store, "d2", "local")
        again = await pool.engine_for("local", deployment="d2")
        assert again is first and not pool.draining and len(factory.built) == 1
        await pool.aclose()

    asyncio.run(scenario())


def test_a_model_this_server_does_not_run_is_warned_about_once(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13 item 2: no warning every 30 s for a deployment of another server's model."""
    store.put_model(ModelRecord("all-minilm-l6-v2", None, ("embeddings",), None, None, NOW))
    deploy(store, "text-embedding-ada-002", "all-minilm-l6-v2")
    now = [0.0]

    async def scenario() -> None:
        pool = make_pool(store, Factory(), clock=lambda: now[0])  # type: ignore[arg-type]
        for _ in range(4):
            await pool.reconcile()
            await asyncio.sleep(0.05)
            now[0] += 31  # past the retry interval each time
        with pytest.raises(ServiceUnavailable, match="another server runs by itself"):
            await pool.resolve("text-embedding-ada-002", "embeddings")

    with caplog.at_level("WARNING", logger="cerulean.services.pool"):
        asyncio.run(scenario())
    warnings = [r for r in caplog.records if "not available on this server" in r.getMessage()]
    assert len(warnings) == 1
    assert "--no-embeddings" in warnings[0].getMessage()


def test_a_registered_embedding_model_loads_as_an_embedder(store: SqlStore) -> None:
    """Issue 13 item 3: embeddings from a registered embedding GGUF, chat refused."""
    from cerulean.engines.fake_embeddings import FakeEmbedder
    from cerulean.errors import OperationNotSupported

    store.put_model(ModelRecord("minilm", "/m/minilm.gguf", ("embeddings",), 512, None, NOW))
    deploy(store, "emb", "minilm")

    def factory(record: ModelRecord) -> FakeEmbedder:
        return FakeEmbedder(name=record.name)

    async def scenario() -> None:
        resident = FakeEngine(name="resident")
        resident.load()
        pool = EnginePool({"resident": resident}, store, factory)
        resolved = await pool.resolve("emb", "embeddings")
        assert resolved.embedder.info.name == "minilm"
        with pytest.raises(OperationNotSupported):
            await pool.resolve("emb", "chat_completion")
        store.delete_deployment("emb")
        await pool.reconcile()
        assert "minilm" not in pool.embedders  # unloaded with its last deployment

    asyncio.run(scenario())


def test_a_deployment_written_in_this_process_is_in_force_at_once(
    store: SqlStore, tmp_path: Path
) -> None:
    """The pool keeps deployments for a second, but any store of this process (the server's,
    the CLI's, a test's) that writes one drops the kept copies."""

    async def scenario() -> None:
        pool = make_pool(store, Factory())
        with pytest.raises(DeploymentNotFound):
            await pool.resolve("fresh", "chat_completion")
        other = SqlStore(f"sqlite:///{tmp_path / 'p.db'}")
        try:
            deploy(other, "fresh", "resident")
            served = await pool.resolve("fresh", "chat_completion")
            assert served.record.name == "fresh"
            assert other.delete_deployment("fresh")
            with pytest.raises(DeploymentNotFound):
                await pool.resolve("fresh", "chat_completion")
        finally:
            other.close()

    asyncio.run(scenario())


def test_a_deployment_changed_by_another_process_is_seen_within_the_ttl(
    store: SqlStore, tmp_path: Path
) -> None:
    async def scenario() -> None:
        deploy(store, "kept", "resident")
        pool = make_pool(store, Factory())
        assert (await pool.resolve("kept", "chat_completion")).record.name == "kept"
        # Another process's write: straight into the database, no store of this process.
        with sqlite3.connect(tmp_path / "p.db") as conn:
            conn.execute("DELETE FROM deployments WHERE name = 'kept'")
        assert (await pool.resolve("kept", "chat_completion")).record.name == "kept"
        await asyncio.sleep(DEPLOYMENT_TTL_S + 0.1)
        with pytest.raises(DeploymentNotFound):
            await pool.resolve("kept", "chat_completion")

    asyncio.run(scenario())
