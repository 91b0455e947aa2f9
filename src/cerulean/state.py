"""The application's runtime state, built by the lifespan and reached through ``app.state``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cerulean.auth import KeyVerifier
from cerulean.engines.base import Engine
from cerulean.quota.base import RateLimiter
from cerulean.quota.memory import InProcessRateLimiter
from cerulean.services.keys import KeyRing
from cerulean.services.pool import EnginePool
from cerulean.settings import Settings
from cerulean.store.base import Store

__all__ = ["AppState"]


@dataclass
class AppState:
    """Everything request handlers may need; one per app instance (no module globals)."""

    settings: Settings
    engines: dict[str, Engine]
    verifier: KeyVerifier = field(default_factory=lambda: KeyVerifier(()))
    store: Store | None = None
    shown_keys: dict[str, str] = field(default_factory=dict)
    started_at: int = field(default_factory=lambda: int(time.time()))  # "created_at" of models
    limiter: RateLimiter = field(default_factory=InProcessRateLimiter)
    clock: Callable[[], float] = time.time
    pool: EnginePool | None = None  # loads and unloads the models of deployments
    keyring: KeyRing | None = None  # keeps ``verifier`` fresh from the store

    @property
    def ready(self) -> bool:
        """Whether the store is open and every engine has loaded."""
        return self.store is not None and all(e.ready for e in self.engines.values())
