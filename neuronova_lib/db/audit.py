"""The audit log writer: every decision is committed before its answer leaves.

Writing one row per request in its own transaction would cost the guard a
commit per frame; instead a writer thread commits whatever has queued up in
one transaction (group commit) and then wakes every request in that batch.
A request is answered only after its record is durable, and if the database
cannot be written the request fails closed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine

from .models import AuditRecord

log = logging.getLogger(__name__)

_FIELDS = {c.name for c in AuditRecord.__table__.columns} - {"id"}


class AuditWriter:
    """Group-committing writer of :class:`AuditRecord` rows (one per process)."""

    def __init__(self, engine: Engine, max_batch: int = 512) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._columns = sorted(_FIELDS)
        placeholders = ", ".join(f"%({c})s" if engine.dialect.paramstyle == "pyformat"
                                 else f":{c}" for c in self._columns)
        self._insert_sql = (f"INSERT INTO {AuditRecord.__tablename__} "
                            f"({', '.join(self._columns)}) VALUES ({placeholders})")
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def _params(self, row: dict[str, Any]) -> dict[str, Any]:
        params = dict(row)
        if self._engine.dialect.name == "sqlite":  # the text SQLAlchemy's DateTime stores
            params["time"] = row["time"].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
        return params

    @staticmethod
    def _row(fields: dict[str, Any]) -> dict[str, Any]:
        unknown = set(fields) - _FIELDS
        if unknown:
            raise TypeError(f"unknown audit fields: {sorted(unknown)}")
        row = dict.fromkeys(_FIELDS)
        row.update(fields)
        row["time"] = row["time"] or datetime.now(timezone.utc)
        return row

    async def record(self, **fields: Any) -> None:
        """Queue one record and wait until it is committed."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._queue.put((self._row(fields), loop, done))
        await done

    def record_sync(self, **fields: Any) -> None:
        """Commit one record from synchronous code (CLI, threads)."""
        event = threading.Event()
        box: list[BaseException | None] = [None]
        self._queue.put((self._row(fields), None, (event, box)))
        event.wait()
        if box[0] is not None:
            raise box[0]

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            error: BaseException | None = None
            try:
                with self._engine.begin() as conn:
                    # One compiled INSERT, executemany'd by the driver: the ORM-level
                    # insert() costs several times more per row on this hot path.
                    conn.exec_driver_sql(self._insert_sql, [self._params(row) for row, _, _ in batch])
            except Exception as exc:  # the requests fail closed with this error
                log.exception("audit log write failed for %d records", len(batch))
                error = exc
            by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for _, loop, waiter in batch:
                if loop is None:
                    event, box = waiter
                    box[0] = error
                    event.set()
                else:
                    by_loop.setdefault(loop, []).append(waiter)
            for loop, futures in by_loop.items():  # one wake-up per event loop, not per request
                loop.call_soon_threadsafe(_settle, futures, error)


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
