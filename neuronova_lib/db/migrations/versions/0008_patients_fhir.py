"""Patient records: the chain's cache and the FHIR R4 facade's resources, versions, search
values and identifier claims.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("patient_cache", "fhir_resources", "fhir_resource_versions", "fhir_search_tokens",
           "fhir_identifier_claims")


def upgrade() -> None:
    existing: set[str] = set()
    if not context.is_offline_mode():
        existing = set(sa.inspect(op.get_bind()).get_table_names())
    # A database made by ``Base.metadata.create_all`` already has the tables.
    if "patient_cache" not in existing:
        op.create_table(
            "patient_cache",
            sa.Column("patient_id", sa.String(length=64), nullable=False),
            sa.Column("resource", sa.Text(), nullable=False),
            sa.Column("fhir_id", sa.String(length=64), nullable=True),
            sa.Column("source", sa.String(length=16), nullable=False),
            sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("family", sa.String(length=128), nullable=True),
            sa.PrimaryKeyConstraint("patient_id"),
        )
        op.create_index("ix_patient_cache_family", "patient_cache", ["family"])
    if "fhir_resources" not in existing:
        op.create_table(
            "fhir_resources",
            sa.Column("resource_type", sa.String(length=40), nullable=False),
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
            sa.Column("resource", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("resource_type", "id"),
        )
        op.create_index("ix_fhir_resources_last_updated", "fhir_resources", ["last_updated"])
    if "fhir_resource_versions" not in existing:
        op.create_table(
            "fhir_resource_versions",
            sa.Column("resource_type", sa.String(length=40), nullable=False),
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
            sa.Column("resource", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("resource_type", "id", "version"),
        )
    if "fhir_search_tokens" not in existing:
        op.create_table(
            "fhir_search_tokens",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("resource_type", sa.String(length=40), nullable=False),
            sa.Column("resource_id", sa.String(length=64), nullable=False),
            sa.Column("param", sa.String(length=32), nullable=False),
            sa.Column("system", sa.String(length=255), nullable=True),
            sa.Column("value", sa.String(length=255), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_fhir_search_lookup", "fhir_search_tokens",
                        ["resource_type", "param", "value"])
        op.create_index("ix_fhir_search_resource", "fhir_search_tokens",
                        ["resource_type", "resource_id"])
    if "fhir_identifier_claims" not in existing:
        op.create_table(
            "fhir_identifier_claims",
            sa.Column("resource_type", sa.String(length=40), nullable=False),
            sa.Column("system", sa.String(length=255), nullable=False),
            sa.Column("value", sa.String(length=255), nullable=False),
            sa.Column("resource_id", sa.String(length=64), nullable=False),
            sa.PrimaryKeyConstraint("resource_type", "system", "value"),
        )


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_table(table)
