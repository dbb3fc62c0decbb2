"""The manifest: one SQLite row per instance, so that a bulk run can stop and resume.

Why SQLite in a file (``$NEURONOVA_HOME/bulk/manifest.db``) and not the
platform database: a bulk run is a batch tool that may run where the
platform's database is not reachable, its rows are many and short-lived in
interest, and SQLite in WAL mode commits a batch of results in well under a
millisecond. Only the client process writes it: workers return results, the
client records them, one transaction per batch — so a crash loses at most the
batches in flight, which a re-run repeats (storing in Orthanc is idempotent).

States (:class:`~neuronova_lib.bulk.results.State`): a listed instance is
``pending``; a worker's result makes it ``done``, ``skipped`` or ``failed``.
A re-run lists its sources again, leaves ``done`` and ``skipped`` rows alone
and processes ``pending`` and ``failed`` ones.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from .results import State
from .sources import Item

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    locator TEXT NOT NULL,
    source TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    message TEXT,
    bytes_in INTEGER,
    bytes_out INTEGER,
    sha256 TEXT,
    sop_instance_uid TEXT,
    orthanc_id TEXT,
    backup TEXT,
    quarantine_sha256 TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    seen_run TEXT,
    run_id TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_instances_run_state ON instances (seen_run, state);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL,
    sources TEXT NOT NULL,
    summary TEXT
);
"""

# A listed instance becomes pending unless it is finished; an Orthanc instance
# marked done whose size no longer matches what was stored (deleted and stored
# again by someone else) is pending again, so the manifest cannot hide a
# change made behind its back.
_UPSERT = """
INSERT INTO instances (key, kind, locator, source, size, state, seen_run, created, updated)
VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    seen_run = excluded.seen_run,
    source = excluded.source,
    locator = excluded.locator,
    size = excluded.size,
    state = CASE
        WHEN instances.kind = 'orthanc' AND instances.state = 'done'
             AND instances.bytes_out IS NOT excluded.size THEN 'pending'
        ELSE instances.state END
"""

_RECORD = """
UPDATE instances SET state = ?, reason = ?, message = ?, bytes_in = ?, bytes_out = ?,
    sha256 = ?, sop_instance_uid = ?, orthanc_id = ?, backup = ?, quarantine_sha256 = ?,
    run_id = ?,
    attempts = attempts + 1, updated = ?
WHERE key = ?
"""


class ManifestBusyError(RuntimeError):
    """Another bulk run holds the manifest."""


class Manifest:
    """The instance states of every bulk run that used one data dir.

    Parameters
    ----------
    path : Path
        The SQLite file; its folder is created.
    readonly : bool
        Open without writing (``--dry-run``); a missing file reads as empty.

    Notes
    -----
    Not thread-safe: one client thread owns it.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            if self.path.exists():
                uri = f"file:{self.path}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True)
            else:
                self._db = sqlite3.connect(":memory:")
                self._db.executescript(_SCHEMA)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(self.path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._migrate()
        self._db.row_factory = sqlite3.Row

    def _migrate(self) -> None:
        """Add the columns a manifest written by an older version lacks."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(instances)")}
        with self._db:
            if "quarantine_sha256" not in have:
                self._db.execute("ALTER TABLE instances ADD COLUMN quarantine_sha256 TEXT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- runs

    def start_run(self, run_id: str, sources: Sequence[str]) -> None:
        """Record that a run began (its status stays ``running`` if it dies)."""
        with self._db:
            self._db.execute(
                "INSERT INTO runs (run_id, started, status, sources) VALUES (?, ?, 'running', ?)",
                (run_id, time.time(), json.dumps(list(sources))),
            )

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        """Record how a run ended: ``complete``, ``failures`` or ``interrupted``."""
        with self._db:
            self._db.execute(
                "UPDATE runs SET finished = ?, status = ?, summary = ? WHERE run_id = ?",
                (time.time(), status, json.dumps(summary), run_id),
            )

    # ---------------------------------------------------------------- instances

    def discover(self, items: Iterable[Item], run_id: str, chunk: int = 2000) -> int:
        """List ``items`` under ``run_id``: new ones become pending, finished ones stay.

        Returns
        -------
        int
            Items listed (a key listed twice counts twice; :meth:`counts` counts rows).
        """
        listed = 0
        batch: list[tuple[Any, ...]] = []
        for item in items:
            now = time.time()
            batch.append(
                (item.key, item.kind, item.locator, item.source, item.size, run_id, now, now)
            )
            if len(batch) >= chunk:
                listed += self._upsert(batch)
                batch = []
        return listed + self._upsert(batch)

    def _upsert(self, rows: list[tuple[Any, ...]]) -> int:
        with self._db:
            self._db.executemany(_UPSERT, rows)
        return len(rows)

    def states(self, keys: Sequence[str]) -> dict[str, str]:
        """The state of each key that has a row (for a dry run, which writes nothing)."""
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            part = keys[start:start + 500]
            marks = ",".join("?" * len(part))
            for row in self._db.execute(
                f"SELECT key, state FROM instances WHERE key IN ({marks})", part
            ):
                found[row["key"]] = row["state"]
        return found

    def todo(self, run_id: str, page: int = 1000) -> Iterator[Item]:
        """Items listed by ``run_id`` that are pending or failed, in listing order.

        Read a page at a time (by rowid), so the client holds one page, and
        results recorded meanwhile do not disturb the walk.
        """
        last = 0
        while True:
            rows = self._db.execute(
                "SELECT rowid, key, kind, locator, size, source FROM instances "
                "WHERE seen_run = ? AND state IN ('pending', 'failed') AND rowid > ? "
                "ORDER BY rowid LIMIT ?",
                (run_id, last, page),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield Item(row["key"], row["kind"], row["locator"], row["size"], row["source"])
            last = rows[-1]["rowid"]

    def record(self, results: Iterable[dict[str, Any]], run_id: str) -> None:
        """Write workers' results (:meth:`InstanceResult.as_dict`), one transaction."""
        now = time.time()
        rows = [
            (
                r["state"], r.get("reason"), r.get("message"), r.get("bytes_in"),
                r.get("bytes_out"), r.get("sha256"), r.get("sop_instance_uid"),
                r.get("orthanc_id"), r.get("backup"), r.get("quarantine_sha256"), run_id,
                now, r["key"],
            )
            for r in results
        ]
        with self._db:
            self._db.executemany(_RECORD, rows)

    def counts(self, run_id: str) -> dict[str, int]:
        """Rows listed by ``run_id``, by state (every state present, zeros included)."""
        counts = {state.value: 0 for state in State}
        for row in self._db.execute(
            "SELECT state, count(*) AS n FROM instances WHERE seen_run = ? GROUP BY state",
            (run_id,),
        ):
            counts[row["state"]] = row["n"]
        return counts

    def reasons(self, run_id: str, state: str) -> dict[str, int]:
        """Rows listed by ``run_id`` in ``state``, counted by reason."""
        return {
            str(row["reason"]): row["n"]
            for row in self._db.execute(
                "SELECT reason, count(*) AS n FROM instances WHERE seen_run = ? AND state = ? "
                "GROUP BY reason ORDER BY reason",
                (run_id, state),
            )
        }

    def rows(self, run_id: str, states: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Rows listed by ``run_id`` in these states, for the report, a page at a time."""
        marks = ",".join("?" * len(states))
        last = 0
        while True:
            page = self._db.execute(
                f"SELECT rowid, * FROM instances WHERE seen_run = ? AND state IN ({marks}) "
                "AND rowid > ? ORDER BY rowid LIMIT 1000",
                (run_id, *states, last),
            ).fetchall()
            if not page:
                return
            for row in page:
                out = dict(row)
                out.pop("rowid", None)
                yield out
            last = page[-1]["rowid"]

    def get(self, key: str) -> dict[str, Any] | None:
        """One row by key (tests and support)."""
        row = self._db.execute("SELECT * FROM instances WHERE key = ?", (key,)).fetchone()
        return dict(row) if row else None


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold a lock beside the manifest for the length of a run.

    Two runs on one manifest would each see the other's items as pending and
    transcode them twice; the second is refused instead.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ManifestBusyError(
                f"another `neuronova transcode` (pid {holder}) is using {path}; wait for it to "
                "finish or stop it (Ctrl-C) — a re-run resumes where it stopped"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
