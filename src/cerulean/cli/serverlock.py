"""A lock file that tells other processes a server runs on a data directory.

``cerulean serve`` holds a *shared* ``flock`` on ``<home>/server.lock`` while it runs (several
servers may share a home); ``cerulean reset`` needs the *exclusive* lock, so it refuses while any
server holds it. The kernel drops the lock when the process dies, so a crash leaves nothing stale.
Where ``fcntl`` does not exist (Windows) there is no lock: stop servers before a reset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["ServerLock", "lock_path", "running_server"]


def lock_path(home: Path) -> Path:
    return home / "server.lock"


class ServerLock:
    """Held by a running server (shared); records its pid and port for error messages."""

    def __init__(self, home: Path, **info: Any) -> None:
        self._path = lock_path(home)
        self._info = {"pid": os.getpid(), **info}
        self._fd: int | None = None

    def __enter__(self) -> ServerLock:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(self._info).encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


def running_server(home: Path) -> dict[str, Any] | None:
    """What the lock file says when a server holds it (``{}`` if unreadable), else None."""
    path = lock_path(home)
    if fcntl is None or not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                info: dict[str, Any] = json.loads(path.read_text() or "{}")
            except ValueError:
                info = {}
            return info
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
