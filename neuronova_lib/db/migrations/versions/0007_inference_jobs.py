"""Inference jobs: study, model (name, version, run id), state, timings, volumes, results.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A database made by ``Base.metadata.create_all`` already has the table.
    if (not context.is_offline_mode()
            and "inference_jobs" in sa.inspect(op.get_bind()).get_table_names()):
        return
    op.create_table(
        "inference_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=True),
        sa.Column("model_run_id", sa.String(length=64), nullable=True),
        sa.Column("model_uri", sa.Text(), nullable=False),
        sa.Column("rerun", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stages", sa.Text(), nullable=False),
        sa.Column("timings", sa.Text(), nullable=True),
        sa.Column("volumes", sa.Text(), nullable=True),
        sa.Column("source_series", sa.Text(), nullable=True),
        sa.Column("seg_series_uid", sa.String(length=64), nullable=True),
        sa.Column("seg_sop_uid", sa.String(length=64), nullable=True),
        sa.Column("sr_series_uid", sa.String(length=64), nullable=True),
        sa.Column("sr_sop_uid", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_inference_jobs_state", "inference_jobs", ["state"])
    op.create_index("ix_inference_jobs_created_at", "inference_jobs", ["created_at"])
    op.create_index("ix_inference_jobs_study_model", "inference_jobs",
                    ["study_uid", "model_name", "model_version"])


def downgrade() -> None:
    op.drop_index("ix_inference_jobs_study_model", table_name="inference_jobs")
    op.drop_index("ix_inference_jobs_created_at", table_name="inference_jobs")
    op.drop_index("ix_inference_jobs_state", table_name="inference_jobs")
    op.drop_table("inference_jobs")
