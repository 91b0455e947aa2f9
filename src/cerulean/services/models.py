"""The model catalog: the models a server runs by itself and the GGUF files users register.

A catalog entry (:class:`~cerulean.store.base.ModelRecord`) without a ``path`` is *resident*: a
model ``cerulean serve`` loads by itself (the embedded Gemma, or ``--model``). One with a ``path``
is a registered GGUF file, loaded when a deployment needs it (:mod:`cerulean.services.pool`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cerulean.engines.base import Engine
from cerulean.engines.embedding import EmbeddingEngine
from cerulean.errors import ControlError, EngineError
from cerulean.packaged import EMBEDDED_MODEL_NAME, EMBEDDING_MODEL_NAME
from cerulean.protocol.capabilities import (
    CHAT_CAPABILITIES,
    EMBEDDING_CAPABILITIES,
    Capability,
    parse_capabilities,
)
from cerulean.settings import Settings
from cerulean.store.base import ModelRecord, Store

__all__ = [
    "GgufFacts",
    "embedded_model_records",
    "check_model_name",
    "ensure_models",
    "inspect_gguf",
    "register_model",
    "remove_model",
    "resident_records",
    "valid_model_name",
]

# llama.cpp's encoder-only (sentence-embedding) architectures: they cannot generate text.
ENCODER_ARCHITECTURES = frozenset(
    {
        "bert",
        "nomic-bert",
        "nomic-bert-moe",
        "jina-bert-v2",
        "jina-bert-v3",
        "modern-bert",
        "neo-bert",
        "gemma-embedding",
    }
)
# llama.cpp's pooling types that make one vector per input: mean, CLS, last token (0 is none,
# 4 is a reranker's score, neither an embedding).
_EMBEDDING_POOLING = frozenset({1, 2, 3})
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GgufFacts:
    """What the catalog records from a GGUF file's metadata."""

    architecture: str | None
    context_length: int | None
    chat_template: str | None
    pooling_type: int | None = None  # <arch>.pooling_type: set by sentence-embedding models

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What the model serves: embeddings for an encoder or a pooled model, else chat and
        completions."""
        if self.architecture in ENCODER_ARCHITECTURES or self.pooling_type in _EMBEDDING_POOLING:
            return EMBEDDING_CAPABILITIES
        return CHAT_CAPABILITIES


def valid_model_name(name: str) -> bool:
    """Whether ``models add --name`` accepts ``name``."""
    return bool(_MODEL_NAME.match(name))


def check_model_name(name: str) -> None:
    """Refuse names that are not 1-128 letters, digits, ``.``, ``_``, ``:`` or ``-``."""
    if not _MODEL_NAME.match(name):
        raise ControlError(
            f"'{name}' is not a valid model name: use 1 to 128 letters, digits, '.', '_', ':' "
            "or '-', starting with a letter or digit (e.g. qwen2.5-0.5b-instruct).",
            reason="invalid",
            code="InvalidResourceName",
        )


def inspect_gguf(path: Path) -> GgufFacts:
    """Validate ``path`` as a GGUF file llama.cpp can read; its context length and template.

    The metadata is read by llama.cpp itself with a vocabulary-only load (no weights): that proves
    this llama.cpp build knows the architecture, and takes a second where the ``gguf`` package's
    reader parses every vocabulary array into Python objects (45 s for Gemma's 262k tokens).
    """
    if not path.is_file():
        raise ControlError(
            f"{path} does not exist or is not a file; pass the path of a .gguf file",
            reason="invalid",
            code="InvalidModelFile",
        )
    with path.open("rb") as handle:
        magic = handle.read(len(_GGUF_MAGIC))
    if magic != _GGUF_MAGIC:
        raise ControlError(
            f"{path} is not a GGUF file (it does not start with 'GGUF'); convert the model "
            "with llama.cpp's convert_hf_to_gguf.py, or download a .gguf build of it",
            reason="invalid",
            code="InvalidModelFile",
        )
    # Imported here: the catalog commands need llama.cpp only to inspect a new file.
    from cerulean.engines.llamacpp.native import NativeModel

    try:
        with _quiet_llama():
            model = NativeModel(path, n_gpu_layers=0, vocab_only=True)
    except EngineError as exc:
        raise ControlError(
            f"llama.cpp cannot read {path} ({exc}); the file may be truncated, or its "
            "architecture newer than this llama.cpp build",
            reason="invalid",
            code="InvalidModelFile",
        ) from exc
    try:
        metadata = dict(model.metadata)
    finally:
        model.close()
    architecture = metadata.get("general.architecture")
    context = metadata.get(f"{architecture}.context_length") if architecture else None
    pooling = metadata.get(f"{architecture}.pooling_type") if architecture else None
    return GgufFacts(
        architecture=architecture,
        context_length=int(context) if context and context.isdigit() else None,
        chat_template=metadata.get("tokenizer.chat_template") or None,
        pooling_type=int(pooling) if pooling and pooling.isdigit() else None,
    )


@contextmanager
def _quiet_llama() -> Iterator[None]:
    """Silence llama.cpp's loader (it reports vocabulary oddities as errors) for one load."""
    from cerulean.engines.llamacpp.native import _init_backend

    _init_backend()  # sets llama-cpp-python's logger to ERROR; set it after, not before
    llama_logger = logging.getLogger("llama-cpp-python")
    level = llama_logger.level
    llama_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        llama_logger.setLevel(level)


def register_model(store: Store, path: Path, name: str) -> ModelRecord:
    """Add the GGUF file at ``path`` to the catalog as ``name``: chat and completions, or
    embeddings when its metadata says it is a sentence-embedding model (:class:`GgufFacts`)."""
    check_model_name(name)
    if store.get_model(name) is not None:
        raise ControlError(
            f"a model called '{name}' is already in the catalog; remove it first "
            f"(cerulean models remove {name}) or pick another --name",
            reason="conflict",
            code="Conflict",
        )
    resolved = path.expanduser().resolve()
    facts = inspect_gguf(resolved)
    record = ModelRecord(
        name=name,
        path=str(resolved),
        capabilities=tuple(sorted(facts.capabilities)),
        context_length=facts.context_length,
        chat_template=facts.chat_template,
        created_at=datetime.now(timezone.utc),
    )
    store.put_model(record)
    return record


def remove_model(store: Store, name: str) -> None:
    """Take a registered model out of the catalog; refused while a deployment uses it."""
    record = store.get_model(name)
    if record is None:
        raise ControlError(
            f"no model called '{name}' in the catalog (cerulean models list shows it)",
            reason="not_found",
            code="ResourceNotFound",
        )
    if record.path is None:
        raise ControlError(
            f"'{name}' is built into Cerulean and cannot be removed",
            reason="conflict",
            code="Conflict",
        )
    users = sorted(d.name for d in store.list_deployments() if d.model == name)
    if users:
        raise ControlError(
            f"'{name}' is deployed as {', '.join(users)}; delete "
            f"{'that deployment' if len(users) == 1 else 'those deployments'} first "
            f"(cerulean deployments delete NAME)",
            reason="conflict",
            code="Conflict",
        )
    store.delete_model(name)


def _resident(name: str, capabilities: frozenset[Capability], context: int | None) -> ModelRecord:
    return ModelRecord(
        name=name,
        path=None,
        capabilities=tuple(sorted(capabilities)),
        context_length=context or None,
        chat_template=None,
        created_at=datetime.now(timezone.utc),
    )


def embedded_model_records(settings: Settings) -> list[ModelRecord]:
    """Catalog entries of the packaged models, written as a server on ``settings`` writes them
    (:func:`resident_records`), so the CLI and the server never rewrite each other's."""
    records = [_resident(EMBEDDED_MODEL_NAME, CHAT_CAPABILITIES, settings.n_ctx)]
    if settings.embeddings and settings.embedding_model is None:
        records.append(_resident(EMBEDDING_MODEL_NAME, EMBEDDING_CAPABILITIES, None))
    return records


def resident_records(
    engines: Mapping[str, Engine], embedders: Mapping[str, EmbeddingEngine] | None = None
) -> list[ModelRecord]:
    """Catalog entries for the engines a server was started with (embedders too).

    An embedder's context is only known once it has loaded, so none is recorded for it.
    """
    chat = [_resident(n, e.info.capabilities, e.info.context_length) for n, e in engines.items()]
    embedding = [_resident(n, e.info.capabilities, None) for n, e in (embedders or {}).items()]
    return chat + embedding


def ensure_models(store: Store, records: Iterable[ModelRecord]) -> None:
    """Put resident ``records`` into the catalog, leaving a registered file of the same name."""
    for record in records:
        existing = store.get_model(record.name)
        if existing is None:
            store.put_model(record)
        elif existing.path is None and (
            parse_capabilities(existing.capabilities),
            existing.context_length,
        ) != (parse_capabilities(record.capabilities), record.context_length):
            store.put_model(
                ModelRecord(
                    name=record.name,
                    path=None,
                    capabilities=record.capabilities,
                    context_length=record.context_length,
                    chat_template=existing.chat_template,
                    created_at=existing.created_at,
                )
            )
