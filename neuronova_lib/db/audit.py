"""The audit log writer: every decision is committed before its answer leaves.

Writing one row per request in its own transaction would cost the guard a
commit per frame; instead a writer thread commits whatever has queued up in
one transaction (group commit) and then wakes every request in that batch.
A request is answered only after its record is durable, and if the database
cannot be written the request fails closed.

Repeated refusals are folded, so that a flood of refused requests (a bad
token sent in a loop, a scanner probing paths) cannot grow the table without
bound:

* A refusal (``decision="deny"``) is keyed by service, user, client, reason,
  status, method and *kind of path* (:func:`path_class`: UID-like segments
  become ``*``). The first refusal of a key opens a row; the next ones within
  ``NEURONOVA_AUDIT_REPEAT_WINDOW`` seconds of it add to that row's
  ``repeat_count`` and move its ``last_time`` (one ``UPDATE`` per key and
  batch), inside the same group commit: each refused request is still counted
  durably before it is answered. ``time`` stays the first one's; the study is
  kept while every folded refusal names the same one, else cleared.
* One client may open at most ``NEURONOVA_AUDIT_REPEAT_KINDS`` keys in a
  window; its further refusals, whatever their kind, are counted in one row
  with reason ``refusals_suppressed`` and path ``*``.
* Allowed decisions are never folded: each stays a row, so "who read this
  study, when" stays answerable.

So a window holds at most ``kinds + 1`` refusal rows per client and service,
and the counts add up to the requests refused. The folding runs in the writer
thread, O(1) per record (a dict lookup), so a request's own cost is unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine

from .models import AuditRecord

log = logging.getLogger(__name__)

_FIELDS = {c.name for c in AuditRecord.__table__.columns} - {"id"}
_TABLE = AuditRecord.__tablename__

#: A path segment that names one object (a UID, a frame list, a number): folded as ``*``.
_ONE_OBJECT = re.compile(r"^[0-9][0-9.,]*$")
#: Path segments kept in a kind of path; deeper ones do not make a new kind.
_CLASS_SEGMENTS = 14
#: Folding keys remembered at most (oldest forgotten first; then a new row opens).
_MAX_KEYS = 100_000
SUPPRESSED = "refusals_suppressed"


def path_class(path: str) -> str:
    """The kind of ``path`` a refusal is folded by: UID-like and over-long segments -> ``*``.

    ``/api/pacs/dicom-web/studies/1.2.3/series/4.5`` ->
    ``/api/pacs/dicom-web/studies/*/series/*``; at most 14 segments count.
    """
    segments = path.split("?", 1)[0].split("/")[:_CLASS_SEGMENTS]
    return "/".join("*" if len(s) > 64 or _ONE_OBJECT.match(s) else s for s in segments)


@dataclass
class _Fold:
    """An open refusal row: its id and what the current batch adds to it."""

    id: int | None
    opened: datetime
    study: str | None
    mixed_study: bool = False
    added: int = 0
    last: datetime | None = None


def _setting_default(name: str) -> Any:
    from ..config import Settings

    return Settings.model_fields[name].default


class AuditWriter:
    """Group-committing writer of :class:`AuditRecord` rows (one per process).

    Parameters
    ----------
    engine : Engine
        The platform database.
    max_batch : int
        Most records committed in one transaction.
    repeat_window, repeat_kinds : optional
        ``NEURONOVA_AUDIT_REPEAT_WINDOW`` and ``NEURONOVA_AUDIT_REPEAT_KINDS``
        (default: the settings' defaults; :meth:`from_settings` reads them).
        A window of 0 writes every refusal as a row of its own.
    """

    def __init__(self, engine: Engine, max_batch: int = 512, *,
                 repeat_window: float | None = None, repeat_kinds: int | None = None) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._window = float(_setting_default("audit_repeat_window")
                             if repeat_window is None else repeat_window)
        self._kinds = int(_setting_default("audit_repeat_kinds")
                          if repeat_kinds is None else repeat_kinds)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._columns = sorted(_FIELDS)
        pyformat = engine.dialect.paramstyle == "pyformat"

        def mark(name: str) -> str:
            return f"%({name})s" if pyformat else f":{name}"

        placeholders = ", ".join(mark(c) for c in self._columns)
        self._insert_sql = (f"INSERT INTO {_TABLE} "
                            f"({', '.join(self._columns)}) VALUES ({placeholders})")
        self._insert_returning_sql = self._insert_sql + " RETURNING id"
        self._update_sql = (
            f"UPDATE {_TABLE} SET repeat_count = repeat_count + {mark('added')}, "
            f"last_time = {mark('last')}, "
            f"study = CASE WHEN {mark('mixed')} = 1 THEN NULL ELSE study END "
            f"WHERE id = {mark('id')}")
        # Only the writer thread touches these.
        self._folds: OrderedDict[tuple[Any, ...], _Fold] = OrderedDict()
        #: (service, client) -> [window opened, keys opened in it]
        self._kinds_open: OrderedDict[tuple[Any, ...], list[Any]] = OrderedDict()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, engine: Engine, settings: Any) -> "AuditWriter":
        """A writer with the ``NEURONOVA_AUDIT_REPEAT_*`` settings."""
        return cls(engine, repeat_window=settings.audit_repeat_window,
                   repeat_kinds=settings.audit_repeat_kinds)

    def _time(self, value: datetime) -> Any:
        if self._engine.dialect.name == "sqlite":  # the text SQLAlchemy's DateTime stores
            return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
        return value

    def _params(self, row: dict[str, Any]) -> dict[str, Any]:
        params = dict(row)
        params["time"] = self._time(row["time"])
        if row["last_time"] is not None:
            params["last_time"] = self._time(row["last_time"])
        return params

    @staticmethod
    def _row(fields: dict[str, Any]) -> dict[str, Any]:
        unknown = set(fields) - _FIELDS
        if unknown:
            raise TypeError(f"unknown audit fields: {sorted(unknown)}")
        row = dict.fromkeys(_FIELDS)
        row.update(fields)
        row["time"] = row["time"] or datetime.now(timezone.utc)
        row["repeat_count"] = row["repeat_count"] or 1
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

    # ------------------------------------------------------------ folding
    def _expire(self, now: datetime) -> None:
        """Forget keys whose window has closed (oldest first: amortised O(1) per record)."""
        for table in (self._folds, self._kinds_open):
            while table:
                opened = next(iter(table.values()))
                opened = opened.opened if isinstance(opened, _Fold) else opened[0]
                if (now - opened).total_seconds() < self._window and len(table) <= _MAX_KEYS:
                    break
                table.popitem(last=False)

    def _fold_key(self, row: dict[str, Any], opened: dict[tuple[Any, ...], _Fold]
                  ) -> tuple[tuple[Any, ...], bool]:
        """The folding key of a refusal, and whether it is a client's over-quota kind."""
        key = (row["service"], row["username"], row["client"], row["reason"], row["status"],
               row["method"], path_class(row["path"] or ""))
        if key in self._folds or key in opened:
            return key, False
        per_client = (row["service"], row["client"])
        count = self._kinds_open.get(per_client)
        if count is None or (row["time"] - count[0]).total_seconds() >= self._window:
            self._kinds_open.pop(per_client, None)  # a new window goes to the end
            count = self._kinds_open[per_client] = [row["time"], 0]
        if count[1] < self._kinds:
            count[1] += 1
            return key, False
        return (row["service"], None, row["client"], SUPPRESSED), True

    def _plan(self, batch: list[Any]) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]],
                                               dict[tuple[Any, ...], _Fold],
                                               dict[tuple[Any, ...], dict[str, Any]]]:
        """Split a batch into plain rows, folds to update and folds to open (with their rows)."""
        plain: list[dict[str, Any]] = []
        touched: list[tuple[Any, ...]] = []
        opened: dict[tuple[Any, ...], _Fold] = {}
        first_rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        if self._window > 0:
            self._expire(batch[0][0]["time"])
        for row, _, _ in batch:
            if self._window <= 0 or row["decision"] != "deny":
                plain.append(row)
                continue
            key, over_quota = self._fold_key(row, opened)
            fold = opened.get(key) or self._folds.get(key)
            if fold is not None and (row["time"] - fold.opened).total_seconds() < self._window:
                if fold.id is not None and fold.added == 0:
                    touched.append(key)
                fold.added += 1
                fold.last = row["time"]
                fold.mixed_study |= row["study"] != fold.study
                continue
            if over_quota:
                row = {**row, "reason": SUPPRESSED, "path": "*", "study": None,
                       "detail": f"refusals of this client beyond {self._kinds} kinds in "
                                 f"{self._window:g} s, any reason; the first: {row['reason']} "
                                 f"{row['method']} {row['path']}"[:4000]}
            opened[key] = _Fold(None, row["time"], row["study"])
            first_rows[key] = row
        return plain, touched, opened, first_rows

    def _write(self, batch: list[Any]) -> None:
        plain, touched, opened, first_rows = self._plan(batch)
        try:
            with self._engine.begin() as conn:
                if plain:
                    # One compiled INSERT, executemany'd by the driver: the ORM-level
                    # insert() costs several times more per row on this hot path.
                    conn.exec_driver_sql(self._insert_sql, [self._params(r) for r in plain])
                for key, fold in opened.items():
                    row = dict(first_rows[key])
                    row["repeat_count"] = 1 + fold.added
                    row["last_time"] = fold.last
                    if fold.mixed_study:
                        row["study"] = None
                    fold.id = conn.exec_driver_sql(self._insert_returning_sql,
                                                   self._params(row)).scalar_one()
                if touched:
                    conn.exec_driver_sql(self._update_sql, [
                        {"added": self._folds[k].added, "last": self._time(self._folds[k].last),
                         "mixed": int(self._folds[k].mixed_study), "id": self._folds[k].id}
                        for k in touched])
        except BaseException:
            # Nothing of this batch is in the table: forget what it would have opened or added.
            for key in touched:
                self._folds[key].added, self._folds[key].last = 0, None
            raise
        for key in touched:
            fold = self._folds[key]
            fold.added, fold.last = 0, None
        for key, fold in opened.items():
            fold.added, fold.last, fold.mixed_study = 0, None, False
            self._folds.pop(key, None)  # a reopened key goes to the end
            self._folds[key] = fold

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
                self._write(batch)
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
