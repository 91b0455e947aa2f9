"""Choosing and preparing the model a plain `cerulean serve` runs."""

from __future__ import annotations

from typing import Any

from cerulean.engines.llamacpp import LlamaCppEngine, ModelSpec
from cerulean.engines.prompts import EMBEDDED_FORMAT
from cerulean.modelfiles import (
    EMBEDDED_MODEL_NAME,
    EMBEDDED_MODEL_VERSION,
    ensure_embedded_model,
)
from cerulean.settings import Settings

__all__ = ["EMBEDDED_DEFAULT_MAX_TOKENS", "build_default_engine"]

# The embedded model is a tiny base model: without a cap a request with no max_tokens could run
# to the end of the context (Azure's default). Documented in docs/differences.md.
EMBEDDED_DEFAULT_MAX_TOKENS = 256


def build_default_engine(
    settings: Settings, *, progress: bool = True
) -> tuple[LlamaCppEngine, str]:
    """The engine for ``--model`` (or the embedded model) and the model version to report.

    Raises :class:`FileNotFoundError` for a ``--model`` path that does not exist.
    """
    common: dict[str, Any] = {
        "n_ctx": settings.n_ctx,
        "n_threads": settings.threads,
        "n_gpu_layers": settings.n_gpu_layers,
        "parallel": settings.parallel,
        "n_batch": settings.n_batch,
        "queue_size": settings.queue_size,
        "queue_timeout": settings.queue_timeout,
    }
    if settings.model is not None:
        if not settings.model.is_file():
            raise FileNotFoundError(
                f"model file {settings.model} does not exist; pass the path of a .gguf file"
            )
        spec = ModelSpec(
            name=settings.model.stem.lower(),
            path=settings.model,
            default_max_tokens=settings.default_max_tokens,
            **common,
        )
        return LlamaCppEngine(spec), "1"
    path = ensure_embedded_model(settings.home / "models", progress=progress)
    spec = ModelSpec(
        name=EMBEDDED_MODEL_NAME,
        path=path,
        default_max_tokens=settings.default_max_tokens or EMBEDDED_DEFAULT_MAX_TOKENS,
        base_format=EMBEDDED_FORMAT,
        **common,
    )
    return LlamaCppEngine(spec), EMBEDDED_MODEL_VERSION
