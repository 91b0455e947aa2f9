"""The data directory and the SQLite file in it, private to the user running Cerulean.

The home is created ``0700`` and the default SQLite database ``0600`` (its ``-wal`` and
``-shm`` files take the database's mode, as SQLite does); an existing home or database of
this user with wider modes is narrowed on open (docs/operations.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cerulean.settings import Settings
from cerulean.store.sql import SqlStore

__all__ = ["open_store", "secure_home"]

logger = logging.getLogger(__name__)

HOME_MODE = 0o700
FILE_MODE = 0o600


def _narrow(path: Path, mode: int) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if info.st_uid == os.getuid() and info.st_mode & 0o777 & ~mode:
        os.chmod(path, mode)
        logger.info("narrowed the mode of %s to %o", path, mode)


def secure_home(settings: Settings) -> Path:
    """Create the data directory ``0700`` (or narrow it); the directory."""
    home = settings.home
    home.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
    _narrow(home, HOME_MODE)
    if settings.database_url is None:  # the default SQLite file, created 0600 before SQLite does
        database = settings.sqlite_file
        fd = os.open(database, os.O_RDWR | os.O_CREAT, FILE_MODE)
        os.close(fd)
        for path in (database, home / "cerulean.db-wal", home / "cerulean.db-shm"):
            _narrow(path, FILE_MODE)
    return home


def open_store(settings: Settings) -> SqlStore:
    """The store of ``settings``, its home secured first."""
    secure_home(settings)
    return SqlStore(settings.store_url)
