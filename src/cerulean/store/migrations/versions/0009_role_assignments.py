"""Issue 15: Microsoft Entra ID role assignments, and the account's own properties.

- ``role_assignments``: which built-in role (by its Azure role definition id) each principal
  (a token's ``oid``) holds on the account (``cerulean roles assign``);
- ``account_properties``: the account's ARM properties that Cerulean keeps
  (``disableLocalAuth``), one row per property, the value as JSON text.

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "role_assignments",
        sa.Column("principal_id", sa.String(128), primary_key=True),
        sa.Column("role_id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "account_properties",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("account_properties")
    op.drop_table("role_assignments")
