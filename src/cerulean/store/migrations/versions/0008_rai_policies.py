"""Issue 15: content filtering as Azure manages it — RAI policies, blocklists and their items,
and the policy a deployment names.

- ``rai_policies``: a policy's ``properties`` as ARM takes them (JSON text), by name;
- ``rai_blocklists`` and ``rai_blocklist_items`` (``pattern``, ``is_regex``);
- ``deployments.rai_policy``: the policy a deployment names (NULL: the built-in default).

Revision ID: 0008
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rai_policies",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("properties", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "rai_blocklists",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "rai_blocklist_items",
        sa.Column(
            "blocklist",
            sa.String(128),
            sa.ForeignKey("rai_blocklists.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("pattern", sa.Text, nullable=False),
        sa.Column("is_regex", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("rai_policy", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("rai_policy")
    op.drop_table("rai_blocklist_items")
    op.drop_table("rai_blocklists")
    op.drop_table("rai_policies")
