"""What a revision needs to know about the live schema before it alters it."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op


def existing_columns(table: str) -> set[str]:
    """The columns ``table`` has now (none in offline mode, where every step is emitted).

    A database made by ``Base.metadata.create_all`` already has the newest columns, so a
    revision that adds columns adds only those missing.
    """
    if context.is_offline_mode():
        return set()
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
