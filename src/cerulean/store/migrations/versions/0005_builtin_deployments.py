"""Issue 13: built-in deployments are seeded once, and a user's change to them sticks.

Before this revision a starting server re-bound ``gpt-35-turbo``, ``gpt-4`` and
``text-embedding-ada-002`` to the model it ran, undoing a user's ``deployments create`` of the
same name, and re-created them when deleted. Now:

- ``deployments.builtin`` marks a deployment the server made and nobody re-pointed: only such a
  deployment follows the model a server runs (``cerulean serve --model``);
- ``seeded`` records each built-in name a server has created once; it is never created again
  (deleting it lasts).

Existing built-in names are marked seeded; those not bound to a registered GGUF file (a resident
model, or one a pre-catalog home names) are marked ``builtin``, as the old code treated them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The built-in names of the releases before this revision.
_OLD_BUILTINS = ("gpt-35-turbo", "gpt-4", "text-embedding-ada-002")


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(
            sa.Column("builtin", sa.Boolean, nullable=False, server_default=sa.false())
        )
    seeded = op.create_table(
        "seeded",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("seeded_at", sa.DateTime(timezone=True), nullable=False),
    )
    deployments = sa.table(
        "deployments",
        sa.column("name", sa.String),
        sa.column("model", sa.String),
        sa.column("upstreams", sa.Text),
        sa.column("builtin", sa.Boolean),
    )
    models = sa.table("models", sa.column("name", sa.String), sa.column("path", sa.Text))
    connection = op.get_bind()
    registered = sa.select(models.c.name).where(models.c.path.is_not(None))
    connection.execute(
        deployments.update()
        .where(
            deployments.c.name.in_(_OLD_BUILTINS),
            deployments.c.upstreams.is_(None),
            deployments.c.model.not_in(registered),
        )
        .values(builtin=True)
    )
    existing = connection.execute(
        sa.select(deployments.c.name).where(deployments.c.name.in_(_OLD_BUILTINS))
    ).all()
    now = datetime.now(timezone.utc)
    if existing:
        op.bulk_insert(seeded, [{"name": row[0], "seeded_at": now} for row in existing])


def downgrade() -> None:
    op.drop_table("seeded")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("builtin")
