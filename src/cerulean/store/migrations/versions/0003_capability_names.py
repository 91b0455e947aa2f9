"""Issue 10: one vocabulary for model capabilities.

Before this revision the control plane stored ``chat,completions`` for registered GGUF files and
the built-in model while a starting server stored ``chat_completion,completion``, so the ARM API
showed the capabilities of whichever wrote last. Every record now holds the names of
:data:`cerulean.protocol.capabilities.Capability`; this rewrites the old spellings in place.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The spellings the control plane wrote before, and the capability each meant.
_RENAMED = {"chat": "chat_completion", "completions": "completion"}
_MODELS = sa.table("models", sa.column("name", sa.String), sa.column("capabilities", sa.String))


def _rewrite(mapping: dict[str, str]) -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(_MODELS.c.name, _MODELS.c.capabilities)).all()
    for name, stored in rows:
        names = [c for c in stored.split(",") if c]
        renamed = ",".join(sorted({mapping.get(c, c) for c in names}))
        if renamed != stored:
            connection.execute(
                _MODELS.update().where(_MODELS.c.name == name).values(capabilities=renamed)
            )


def upgrade() -> None:
    _rewrite(_RENAMED)


def downgrade() -> None:
    _rewrite({new: old for old, new in _RENAMED.items()})
