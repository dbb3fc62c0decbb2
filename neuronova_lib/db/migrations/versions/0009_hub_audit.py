"""Audit rows name the notebook server (JupyterHub) and the MLflow run behind a read.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from neuronova_lib.db.migrations.columns import existing_columns

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A database made by ``Base.metadata.create_all`` already has the columns.
    existing = existing_columns("audit")
    if "server" not in existing:
        op.add_column("audit", sa.Column("server", sa.String(128), nullable=True))
        op.create_index("ix_audit_server", "audit", ["server"])
    if "run_id" not in existing:
        op.add_column("audit", sa.Column("run_id", sa.String(64), nullable=True))
        op.create_index("ix_audit_run_id", "audit", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_run_id", table_name="audit")
    op.drop_index("ix_audit_server", table_name="audit")
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("run_id")
        batch.drop_column("server")
