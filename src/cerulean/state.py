"""The application's runtime state, built by the lifespan and reached through ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field

from cerulean.auth import KeyVerifier
from cerulean.engines.base import Engine
from cerulean.engines.embedding import EmbeddingEngine
from cerulean.settings import Settings
from cerulean.store.base import Store

__all__ = ["AppState"]


@dataclass
class AppState:
    """Everything request handlers may need; one per app instance (no module globals)."""

    settings: Settings
    engines: dict[str, Engine]
    embedders: dict[str, EmbeddingEngine] = field(default_factory=dict)
    verifier: KeyVerifier = field(default_factory=lambda: KeyVerifier(()))
    store: Store | None = None
    shown_keys: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """Whether the store is open and every engine (embedders too) has loaded."""
        return (
            self.store is not None
            and all(e.ready for e in self.engines.values())
            and all(e.ready for e in self.embedders.values())
        )
