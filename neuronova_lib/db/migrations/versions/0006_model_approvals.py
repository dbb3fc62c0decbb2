"""Approvals of the model promotion gate: which version became champion, who, when, why.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A database made by ``Base.metadata.create_all`` already has the table.
    if (not context.is_offline_mode()
            and "model_approvals" in sa.inspect(op.get_bind()).get_table_names()):
        return
    op.create_table(
        "model_approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("model_id", sa.String(length=64), nullable=True),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=True),
        sa.Column("approved_by", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.Column("criteria", sa.Text(), nullable=True),
        sa.Column("replaced_version", sa.String(length=32), nullable=True),
        sa.Column("previous_version", sa.String(length=32), nullable=True),
        sa.Column("previous_run_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_model_approvals_model_name", "model_approvals", ["model_name"])
    op.create_index("ix_model_approvals_name_id", "model_approvals", ["model_name", "id"])


def downgrade() -> None:
    op.drop_index("ix_model_approvals_name_id", table_name="model_approvals")
    op.drop_index("ix_model_approvals_model_name", table_name="model_approvals")
    op.drop_table("model_approvals")
