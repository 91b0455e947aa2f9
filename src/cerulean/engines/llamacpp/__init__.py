"""The llama.cpp engine: continuous batching over llama-cpp-python's low-level API.

The package imports without the native library: ``LlamaCppEngine`` and friends are loaded on
first use (PEP 562), so pure-Python parts (``prompts``, ``tools``, ``stops``, ``text``,
``prefix``) serve the CLI and the tests without loading ``libllama``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cerulean.engines.llamacpp.engine import LlamaCppEngine, ModelSpec, PromptPlan

__all__ = ["LlamaCppEngine", "ModelSpec", "PromptPlan"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cerulean.engines.llamacpp import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
