"""Schema migrations (Alembic), applied programmatically when a store opens.

The migration scripts ship inside the package (``cerulean/store/migrations``). :func:`upgrade`
runs them in one transaction holding a lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory
lock), so servers starting together against one database take turns and the second finds the
work done. Homes made before migrations existed (tables, no ``alembic_version``) are adopted by
the first migration, which creates only the tables that are missing.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade"]

SCRIPT_LOCATION = "cerulean.store:migrations"
# Any fixed 64-bit number: the advisory lock all Cerulean processes agree on.
_PG_LOCK_ID = 0x636572756C65616E  # "cerulean" in ASCII


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for Cerulean's scripts, bound to ``connection`` if given."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision the scripts define."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (``None``: never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database behind ``engine`` to ``revision`` (default: the latest)."""
    with engine.connect().execution_options(cerulean_write_lock=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
        if revision == "head" and current_revision(conn) == head_revision():
            return
        command.upgrade(alembic_config(conn), revision)
