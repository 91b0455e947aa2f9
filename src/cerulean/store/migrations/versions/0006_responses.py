"""Issue 14: stored Responses API responses (``previous_response_id``, retrieve, input items).

One row per stored response: the response object, its input items and the conversation the
next turn continues, as JSON text; ``expires_at`` drives the retention purge (30 days by
default, as Azure); ``runner``, ``heartbeat`` and ``events`` serve background responses (a run
whose heartbeat stops was interrupted; its events let a client resume its stream).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("deployment", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("runner", sa.String(256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("input_items", sa.Text, nullable=False),
        sa.Column("conversation", sa.Text, nullable=False),
        sa.Column("events", sa.Text, nullable=True),
        sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_responses_expires_at", "responses", ["expires_at"])
    op.create_index("ix_responses_status", "responses", ["status"])


def downgrade() -> None:
    op.drop_index("ix_responses_status", "responses")
    op.drop_index("ix_responses_expires_at", "responses")
    op.drop_table("responses")
