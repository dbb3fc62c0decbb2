"""Alembic environment of the platform database.

Run from code by :func:`neuronova_lib.db.migrate.upgrade_database`, which hands
over an open connection in ``config.attributes["connection"]``; without one (a
developer's ``command.revision(..., autogenerate=True)`` or ``--sql`` mode), the
URL in the ``sqlalchemy.url`` option is used. Logging is left to the
application: a library does not configure the root logger.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from neuronova_lib.db.engine import get_engine
from neuronova_lib.db.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=True,
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    """Write the SQL to stdout instead of running it (``alembic upgrade --sql``)."""
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set; build the config with migrate.alembic_config(url)"
    with get_engine(url).begin() as conn:
        _run_on(conn)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
