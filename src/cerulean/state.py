"""The application's runtime state, built whole by the lifespan, reached through ``app.state``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cerulean.engines.base import Engine
from cerulean.engines.embedding import EmbeddingEngine
from cerulean.quota.base import RateLimiter
from cerulean.services.batches import BatchRunner, BatchService
from cerulean.services.files import FileService
from cerulean.services.filtering.pipeline import ContentSafety
from cerulean.services.identity import EntraAuth
from cerulean.services.keys import KeyRing
from cerulean.services.pool import EnginePool
from cerulean.services.responses import BackgroundRuns
from cerulean.services.studio import StudioSessions
from cerulean.services.telemetry import Telemetry
from cerulean.services.usage import UsageRecorder
from cerulean.settings import Settings
from cerulean.store.base import Store

__all__ = ["AppState"]


@dataclass
class AppState:
    """Everything request handlers may need; one per app instance (no module globals).

    The lifespan builds it once the store is open, so every field is there for every request.
    """

    settings: Settings
    store: Store
    pool: EnginePool  # the loaded models, chat engines (loaded and unloaded) and embedders
    keyring: KeyRing  # the valid keys' digests, kept fresh from the store
    limiter: RateLimiter
    content_safety: ContentSafety  # content-filter classifiers, policies and blocklists
    files: FileService  # uploaded and batch-produced files
    batches: BatchService
    runner: BatchRunner  # runs batch work when settings.batch_runner (the lifespan starts it)
    shown_keys: dict[str, str] = field(default_factory=dict)
    responses: BackgroundRuns = field(default_factory=BackgroundRuns)  # background responses
    entra: EntraAuth | None = None  # Entra ID sign-in (None: no issuer trusted, keys only)
    studio: StudioSessions | None = None  # Cerulean Studio's sign-ins (None: the Studio is off)
    started_at: int = field(default_factory=lambda: int(time.time()))  # "created_at" of models
    clock: Callable[[], float] = time.time
    usage: UsageRecorder | None = None  # None: usage accounting is off
    telemetry: Telemetry | None = None  # None: no OTLP endpoint configured

    @property
    def engines(self) -> dict[str, Engine]:
        """The chat engines loaded now, by model name."""
        return self.pool.engines

    @property
    def embedders(self) -> dict[str, EmbeddingEngine]:
        """The embedding engines, by model name."""
        return self.pool.embedders

    @property
    def served(self) -> dict[str, Engine | EmbeddingEngine]:
        """Every model loaded now, chat and embedding engines alike."""
        return {**self.engines, **self.embedders}

    @property
    def ready(self) -> bool:
        """Whether every engine (embedders too) has loaded."""
        return all(e.ready for e in self.served.values())
