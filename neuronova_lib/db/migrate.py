"""Bring the platform database to the newest schema with Alembic, from code.

The API and the guard proxy call :func:`upgrade_database` when they start, so a
fresh data dir gets its tables and an old one gets its migrations without
anybody running ``alembic`` by hand, and without an ``alembic.ini`` on disk.

Two processes may start at the same moment against the same database; a lock
(a file lock next to a SQLite file, an advisory lock on PostgreSQL) makes the
second one wait and then find nothing left to do.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url

from ..filelock import exclusive_file_lock
from .engine import get_engine

log = logging.getLogger(__name__)

#: The Alembic script folder (``env.py``, ``versions/``) that ships inside the package.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: The revision that created the first tables; a database made with
#: ``Base.metadata.create_all`` before migrations existed is stamped with it.
INITIAL_REVISION = "0001"
#: Any fixed number, shared by every process that migrates this database (PostgreSQL).
_PG_LOCK_KEY = 0x4E4E4D47  # "NNMG"


def alembic_config(url: str) -> Config:
    """An Alembic :class:`~alembic.config.Config` for ``url``, built without an ini file.

    Parameters
    ----------
    url
        SQLAlchemy URL of the platform database.

    Returns
    -------
    alembic.config.Config
        Usable with every ``alembic.command``; for example a developer adds a
        migration with ``command.revision(alembic_config(url), "add x",
        autogenerate=True)``.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolates '%': a percent-encoded password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision in ``versions/``."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, f"no migrations in {MIGRATIONS_DIR}"
    return head


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (``None``: never migrated)."""
    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _sqlite_file_lock(url: str) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    db_path = Path(database)
    if not db_path.parent.exists():
        # The data dir holds secrets too: create it private.
        db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with exclusive_file_lock(db_path.with_name(db_path.name + ".migrate-lock")):
        yield


def _adopt_unversioned(conn: Connection, cfg: Config) -> None:
    """Stamp a database whose tables were made by ``create_all`` instead of Alembic.

    Without this, the first migration would fail on "table already exists" in a
    data dir that some tool created before the migrations existed.
    """
    if MigrationContext.configure(conn).get_current_revision() is not None:
        return
    existing = set(inspect(conn).get_table_names())
    initial = {"users", "refresh_tokens", "audit"}
    if not existing & initial:
        return
    if not initial <= existing:
        raise RuntimeError(
            f"{conn.engine.url!r} has only some of the platform tables "
            f"({sorted(existing & initial)}) and no Alembic version; "
            "move the database aside or drop those tables, then start again."
        )
    log.warning("database has tables but no Alembic version: stamping %s", INITIAL_REVISION)
    command.stamp(cfg, INITIAL_REVISION)


def upgrade_database(url: str) -> None:
    """Create or migrate the platform database at ``url`` to the newest revision.

    Idempotent: a database already at the head is left as it is. Safe to call
    from several processes at once (the API and the guard proxy both do at
    startup): they take a lock, so one migrates and the others find it done.

    Parameters
    ----------
    url
        SQLAlchemy URL, e.g. ``sqlite:////data/neuronova.db`` or
        ``postgresql+psycopg://user:pw@host/db``. A SQLite file's folder is
        created (mode 0700) when missing.

    Raises
    ------
    RuntimeError
        The database holds some of the platform's tables but no Alembic
        version, so it is neither new nor migrated: it is left untouched.
    """
    cfg = alembic_config(url)
    engine = get_engine(url)
    file_lock = (
        _sqlite_file_lock(url) if engine.dialect.name == "sqlite" else contextlib.nullcontext()
    )
    with file_lock, engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Released at the end of this transaction, i.e. once the migration is in.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        # env.py runs the migrations on this connection, inside this transaction.
        cfg.attributes["connection"] = conn
        _adopt_unversioned(conn, cfg)
        command.upgrade(cfg, "head")
