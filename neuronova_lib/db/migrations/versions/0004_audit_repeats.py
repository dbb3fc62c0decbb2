"""Audit rows that stand for repeated refusals: a count and the time of the last one.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from neuronova_lib.db.migrations.columns import existing_columns

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A database made by ``Base.metadata.create_all`` already has the columns.
    existing = existing_columns("audit")
    if "repeat_count" not in existing:
        # Every row written before this revision stands for one request.
        op.add_column("audit", sa.Column("repeat_count", sa.Integer(), nullable=False,
                                         server_default="1"))
    if "last_time" not in existing:
        op.add_column("audit", sa.Column("last_time", sa.DateTime(timezone=True),
                                         nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("last_time")
        batch.drop_column("repeat_count")
