"""Alembic's entry point: runs on the connection :func:`cerulean.store.migrate.upgrade` passes."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from cerulean.store.sql import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "Cerulean's migrations run on start (cerulean.store.migrate.upgrade), not from the "
        "alembic command line"
    )
# Batch mode lets later migrations alter SQLite tables (SQLite's ALTER TABLE is limited).
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
