"""The audit log writer: every decision is committed before its answer leaves.

Writing one row per request in its own transaction would cost the guard a
commit per frame; instead a writer thread commits whatever has queued up in
one transaction (group commit) and then wakes every request in that batch.
A request is answered only after its record is durable, and if the database
cannot be written the request fails closed.

Repeated refusals are folded, so that a flood of refused requests (a bad
token sent in a loop, a scanner probing paths) cannot grow the table without
bound:

* A refusal (``decision="deny"``) is of a *kind*: service, user, client,
  reason, status, method and kind of path (:func:`path_class`: UID-like
  segments become ``*``). Within ``NEURONOVA_AUDIT_REPEAT_WINDOW`` seconds of
  the first refusal of a kind, the first ``NEURONOVA_AUDIT_REPEAT_BURST`` are
  rows of their own, as any decision (with their request ids); the next one
  opens a *counting row* and every further one adds to its ``repeat_count``
  and moves its ``last_time`` (one ``UPDATE`` per kind and batch), inside the
  same group commit: each refused request is still counted durably before it
  is answered. The counting row's ``time`` is the first refusal it counts; it
  keeps the study while every refusal it counts names the same one.
* One client may add at most ``NEURONOVA_AUDIT_CLIENT_ROWS`` refusal rows in
  a window (rows of their own and counting rows alike); beyond, its refusals
  of any kind without a counting row yet are all counted in one row with
  reason ``refusals_suppressed`` and path ``*``. This bounds a client that
  varies its refusals (paths, users, reasons) to stay under the burst.
* Allowed decisions are never folded: each stays a row, so "who read this
  study, when" stays answerable.

So a window holds at most ``client_rows + 1`` refusal rows per client and
service, whatever the flood, and the counts add up to the requests
refused. The folding runs in the writer thread, O(1) per record (a dict
lookup), so a request's own cost is unchanged.
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


#: Sent by neuronova_lib while an MLflow run is active: the run's id.
RUN_HEADER = "x-neuronova-run"


def run_id_header(value: str | bytes | None) -> str | None:
    """An MLflow run id from ``X-NeuroNova-Run``: up to 64 letters, digits, ``-`` or ``_``;
    anything else is not kept (it is the client's word, recorded as such, never trusted)."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not value:
        return None
    value = value.strip()[:64]
    return value if value and all(ch.isalnum() or ch in "-_" for ch in value) else None


@dataclass
class _Fold:
    """One kind of refusal in its window: how many so far, and the row that counts the rest."""

    opened: datetime
    seen: int = 0  # refusals of this kind in the window (rows of their own first)
    id: int | None = None  # the counting row, once written
    first: dict[str, Any] | None = None  # the counting row, to insert with this batch
    study: str | None = None
    mixed_study: bool = False
    suppressed: bool = False  # the client's row for refusals beyond its quota
    added: int = 0  # refusals this batch adds to the counting row
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
    repeat_window, repeat_burst, client_rows : optional
        ``NEURONOVA_AUDIT_REPEAT_WINDOW``, ``NEURONOVA_AUDIT_REPEAT_BURST`` and
        ``NEURONOVA_AUDIT_CLIENT_ROWS`` (default: the settings' defaults;
        :meth:`from_settings` reads them).
        A window of 0 writes every refusal as a row of its own.
    """

    def __init__(self, engine: Engine, max_batch: int = 512, *,
                 repeat_window: float | None = None, repeat_burst: int | None = None,
                 client_rows: int | None = None) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._window = float(_setting_default("audit_repeat_window")
                             if repeat_window is None else repeat_window)
        self._client_rows = int(_setting_default("audit_client_rows")
                                if client_rows is None else client_rows)
        self._burst = int(_setting_default("audit_repeat_burst")
                          if repeat_burst is None else repeat_burst)
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
        #: (service, client) -> [window opened, refusal rows added in it]
        self._clients: OrderedDict[tuple[Any, ...], list[Any]] = OrderedDict()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, engine: Engine, settings: Any) -> "AuditWriter":
        """A writer with the ``NEURONOVA_AUDIT_REPEAT_*`` settings."""
        return cls(engine, repeat_window=settings.audit_repeat_window,
                   repeat_burst=settings.audit_repeat_burst,
                   client_rows=settings.audit_client_rows)

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
        for table in (self._folds, self._clients):
            while table:
                opened = next(iter(table.values()))
                opened = opened.opened if isinstance(opened, _Fold) else opened[0]
                if (now - opened).total_seconds() < self._window and len(table) <= _MAX_KEYS:
                    break
                table.popitem(last=False)

    def _fold(self, key: tuple[Any, ...], now: datetime, **fresh: Any) -> _Fold:
        """The fold of ``key`` in its window; a new window when none is open. O(1)."""
        fold = self._folds.get(key)
        if fold is not None and (now - fold.opened).total_seconds() < self._window:
            return fold
        self._folds.pop(key, None)  # a new window goes to the end
        fold = self._folds[key] = _Fold(now, **fresh)
        return fold

    def _client_quota(self, row: dict[str, Any]) -> list[Any]:
        """``[window opened, rows added]`` of the row's client (a new window when due)."""
        key, now = (row["service"], row["client"]), row["time"]
        quota = self._clients.get(key)
        if quota is None or (now - quota[0]).total_seconds() >= self._window:
            self._clients.pop(key, None)
            quota = self._clients[key] = [now, 0]
        return quota

    @staticmethod
    def _add(fold: _Fold, row: dict[str, Any], adding: list[_Fold]) -> None:
        if fold.id is not None and fold.added == 0:
            adding.append(fold)
        fold.added += 1
        fold.last = row["time"]
        fold.mixed_study |= row["study"] != fold.study

    def _open(self, fold: _Fold, row: dict[str, Any], opening: list[_Fold]) -> None:
        fold.first = self._counting_row(row, fold)
        fold.study = fold.first["study"]
        opening.append(fold)

    def _plan(self, batch: list[Any]) -> tuple[list[dict[str, Any]], list[_Fold], list[_Fold]]:
        """Split a batch into rows of their own, counting rows to open and rows to add to."""
        plain: list[dict[str, Any]] = []
        opening: list[_Fold] = []
        adding: list[_Fold] = []
        if self._window > 0:
            self._expire(batch[0][0]["time"])
        for row, _, _ in batch:
            if self._window <= 0 or row["decision"] != "deny":
                plain.append(row)
                continue
            now = row["time"]
            fold = self._fold((row["service"], row["username"], row["client"], row["reason"],
                               row["status"], row["method"], path_class(row["path"] or "")), now)
            if fold.id is not None or fold.first is not None:  # its counting row is open
                self._add(fold, row, adding)
                continue
            quota = self._client_quota(row)
            if quota[1] >= self._client_rows:  # this client has had its rows: one for the rest
                fold = self._fold((row["service"], row["client"], SUPPRESSED), now,
                                  suppressed=True)
                if fold.id is not None or fold.first is not None:
                    self._add(fold, row, adding)
                else:
                    self._open(fold, row, opening)
                continue
            quota[1] += 1
            fold.seen += 1
            if fold.seen <= self._burst:
                plain.append(row)
            else:
                self._open(fold, row, opening)
        return plain, opening, adding

    def _counting_row(self, row: dict[str, Any], fold: _Fold) -> dict[str, Any]:
        if not fold.suppressed:
            return dict(row)
        return {**row, "reason": SUPPRESSED, "path": "*", "study": None,
                "detail": f"refusals of this client beyond {self._client_rows} rows in "
                          f"{self._window:g} s, any kind; the first: {row['reason']} "
                          f"{row['method']} {row['path']}"[:4000]}

    def _write(self, batch: list[Any]) -> None:
        plain, opening, adding = self._plan(batch)
        try:
            with self._engine.begin() as conn:
                if plain:
                    # One compiled INSERT, executemany'd by the driver: the ORM-level
                    # insert() costs several times more per row on this hot path.
                    conn.exec_driver_sql(self._insert_sql, [self._params(r) for r in plain])
                for fold in opening:
                    row = dict(fold.first or {})
                    row["repeat_count"] = 1 + fold.added
                    row["last_time"] = fold.last
                    if fold.mixed_study:
                        row["study"] = None
                    fold.id = conn.exec_driver_sql(self._insert_returning_sql,
                                                   self._params(row)).scalar_one()
                if adding:
                    conn.exec_driver_sql(self._update_sql, [
                        {"added": f.added, "last": self._time(f.last),
                         "mixed": int(f.mixed_study), "id": f.id} for f in adding])
        except BaseException:
            # Nothing of this batch is in the table: its counting rows are still to write.
            for fold in opening:
                fold.id = None
            raise
        finally:
            for fold in (*opening, *adding):
                fold.first, fold.added, fold.last = None, 0, None

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
