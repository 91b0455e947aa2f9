"""Choosing and preparing the model a plain `cerulean serve` runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cerulean.engines.llamacpp import LlamaCppEngine, ModelSpec
from cerulean.engines.llamacpp.embedder import EmbedderSpec, LlamaCppEmbedder
from cerulean.engines.llamacpp.prompts import EMBEDDED_FORMAT
from cerulean.engines.llamacpp.turns import CpuTurns
from cerulean.packaged.gemma import (
    EMBEDDED_MODEL_NAME,
    EMBEDDED_MODEL_VERSION,
    ensure_embedded_model,
)
from cerulean.packaged.minilm import (
    EMBEDDING_MODEL_NAME,
    EMBEDDING_MODEL_VERSION,
    ensure_embedding_model,
)
from cerulean.settings import Settings
from cerulean.store.base import ModelRecord

__all__ = [
    "EMBEDDED_DEFAULT_MAX_TOKENS",
    "build_catalog_engine",
    "build_default_embedder",
    "build_default_engine",
]

# The embedded model is a tiny base model: without a cap a request with no max_tokens could run
# to the end of the context (Azure's default). Documented in docs/differences.md.
EMBEDDED_DEFAULT_MAX_TOKENS = 256


def build_default_engine(
    settings: Settings, *, progress: bool = True, turns: CpuTurns | None = None
) -> tuple[LlamaCppEngine, str]:
    """The engine for ``--model`` (or the embedded model) and the model version to report;
    ``turns``: shared with the process's other llama.cpp models (:mod:`.turns`).

    Raises :class:`FileNotFoundError` for a ``--model`` path that does not exist.
    """
    common = {**_engine_options(settings), "turns": turns}
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


def _engine_options(settings: Settings) -> dict[str, Any]:
    """What every chat engine takes from the settings."""
    return {
        "n_ctx": settings.n_ctx,
        "n_threads": settings.threads,
        "n_gpu_layers": settings.n_gpu_layers,
        "parallel": settings.parallel,
        "fair_share": settings.fair_share,
        "n_batch": settings.n_batch,
        "queue_size": settings.queue_size,
        "queue_timeout": settings.queue_timeout,
    }


def build_catalog_engine(
    settings: Settings, record: ModelRecord, *, turns: CpuTurns | None = None
) -> LlamaCppEngine | LlamaCppEmbedder:
    """The engine of a registered GGUF file (``cerulean models add``), sized like the others:
    an embedder for an embedding model, else a generator."""
    if record.path is None:
        raise ValueError(f"model {record.name} has no file to load")
    if "embeddings" in record.capabilities:
        return LlamaCppEmbedder(
            EmbedderSpec(
                record.name,
                Path(record.path),
                n_threads=settings.threads,
                n_gpu_layers=settings.n_gpu_layers,
                turns=turns,
            )
        )
    options: dict[str, Any] = {**_engine_options(settings), "turns": turns}
    if record.context_length:
        options["n_ctx"] = min(settings.n_ctx, record.context_length)
    spec = ModelSpec(
        name=record.name,
        path=Path(record.path),
        default_max_tokens=settings.default_max_tokens,
        **options,
    )
    return LlamaCppEngine(spec)


def build_default_embedder(
    settings: Settings,
    *,
    announce: Callable[[str], None] | None = None,
    turns: CpuTurns | None = None,
) -> tuple[LlamaCppEmbedder, str] | None:
    """The embedding engine for ``--embedding-model`` (or the packaged model), or None.

    None when ``--no-embeddings``. Raises :class:`FileNotFoundError` for a missing
    ``--embedding-model`` and :class:`RuntimeError` when the model package is not installed.
    """
    if not settings.embeddings:
        return None
    common: dict[str, Any] = {
        "n_threads": settings.threads,
        "n_gpu_layers": settings.n_gpu_layers,
        "turns": turns,
    }
    if settings.embedding_model is not None:
        if not settings.embedding_model.is_file():
            raise FileNotFoundError(
                f"embedding model file {settings.embedding_model} does not exist; pass the path "
                "of a .gguf file"
            )
        name = settings.embedding_model.stem.lower()
        return LlamaCppEmbedder(EmbedderSpec(name, settings.embedding_model, **common)), "1"
    path = ensure_embedding_model(settings.home / "models", announce=announce)
    spec = EmbedderSpec(EMBEDDING_MODEL_NAME, path, **common)
    return LlamaCppEmbedder(spec), EMBEDDING_MODEL_VERSION
