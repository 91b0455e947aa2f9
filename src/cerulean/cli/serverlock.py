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

__all__ = ["ServerLock", "lock_path", "running_homes", "running_server"]


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


def _serve_home(cmdline: list[str], environ: dict[str, str]) -> Path | None:
    """The data directory of a ``cerulean serve`` command line, or None for another program."""
    if "serve" not in cmdline or not any(Path(a).name == "cerulean" for a in cmdline):
        return None
    for index, arg in enumerate(cmdline):
        if arg == "--home" and index + 1 < len(cmdline):
            return Path(cmdline[index + 1])
        if arg.startswith("--home="):
            return Path(arg.split("=", 1)[1])
    return Path(environ.get("CERULEAN_HOME", "~/.cerulean"))


def running_homes() -> list[Path]:
    """The data directories of the ``cerulean serve`` processes of this user (read from
    ``/proc``; empty where there is none), each checked against its lock file."""
    homes: list[Path] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return homes
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            environ = dict(
                item.split("=", 1)
                for item in (entry / "environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in item
            )
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # another user's process, or one that just ended
            continue
        home = _serve_home(cmdline, environ)
        if home is None:
            continue
        home = home.expanduser()
        home = (home if home.is_absolute() else cwd / home).resolve()
        if home not in homes and running_server(home) is not None:
            homes.append(home)
    return sorted(homes)
