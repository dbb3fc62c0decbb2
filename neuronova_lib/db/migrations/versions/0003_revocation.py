"""Revocation: per-token (jti) and per-user, refresh families, sign-in throttling.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _existing() -> tuple[set[str], dict[str, set[str]]]:
    """Tables and their columns now (empty in offline mode, where everything is emitted)."""
    if context.is_offline_mode():
        return set(), {}
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    return tables, {t: {c["name"] for c in inspector.get_columns(t)} for t in tables}


def upgrade() -> None:
    # A database made by ``Base.metadata.create_all`` (then stamped 0001 by
    # ``upgrade_database``) already has all of this: add only what is missing.
    tables, columns = _existing()
    if "tokens_not_before" not in columns.get("users", set()):
        op.add_column("users", sa.Column("tokens_not_before", sa.DateTime(timezone=True),
                                         nullable=True))
    if "family" not in columns.get("refresh_tokens", set()):
        op.add_column("refresh_tokens", sa.Column("family", sa.String(length=64), nullable=True))
        op.create_index("ix_refresh_tokens_family", "refresh_tokens", ["family"])
    if "access_jti" not in columns.get("refresh_tokens", set()):
        op.add_column("refresh_tokens",
                      sa.Column("access_jti", sa.String(length=64), nullable=True))
    if "revoked_tokens" not in tables:
        op.create_table(
            "revoked_tokens",
            sa.Column("jti", sa.String(length=64), nullable=False),
            sa.Column("username", sa.String(length=64), nullable=True),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("reason", sa.String(length=64), nullable=False),
            sa.PrimaryKeyConstraint("jti"),
        )
        op.create_index("ix_revoked_tokens_username", "revoked_tokens", ["username"])
        op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])
    if "sign_in_failures" not in tables:
        op.create_table(
            "sign_in_failures",
            sa.Column("username", sa.String(length=64), nullable=False),
            sa.Column("failures", sa.Integer(), nullable=False),
            sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("username"),
        )
        op.create_index("ix_sign_in_failures_last_failure_at", "sign_in_failures",
                        ["last_failure_at"])


def downgrade() -> None:
    op.drop_index("ix_sign_in_failures_last_failure_at", table_name="sign_in_failures")
    op.drop_table("sign_in_failures")
    op.drop_index("ix_revoked_tokens_expires_at", table_name="revoked_tokens")
    op.drop_index("ix_revoked_tokens_username", table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_index("ix_refresh_tokens_family")
        batch.drop_column("access_jti")
        batch.drop_column("family")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tokens_not_before")
