"""Audit rows for the answers nginx sends from the frame store, read from its access log.

A frame served from the frame store is decided by a cached guard decision, so
the guard writes no row for it; nginx writes a line to ``logs/nginx-frames.log``
for every such answer with the token's id (its ``jti``, never the token), the
user, the role, the study and nginx's request id. The guard's
:class:`FrameAccessImporter` reads the new lines every second and writes them
into the audit table, so ``GET /api/audit`` still answers "who read this study"
completely.

One frame is one request, and a viewer reads hundreds a second: lines are
grouped per import into one row for each (user, token, study, series, kind of
resource, status, client), with ``repeat_count`` the number of answers and
``time`` / ``last_time`` the first and last of them (service ``nginx``, reason
``frame_store``). The per-request detail stays in the log file, joined by
``request_id`` (the group's first).

The position read so far is kept in ``run/nginx-frames.offset`` with the log's
inode, under a file lock, so several guard processes import each line once and
a restart continues where it stopped; a log that was replaced or truncated is
read from its start.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ..db.models import AuditRecord
from ..filelock import exclusive_file_lock

log = logging.getLogger(__name__)

_PATH = re.compile(r"^/api/pacs/dicom-web/studies/([0-9.]+)/series/([0-9.]+)/(instances/|metadata$)")
#: Most bytes read in one import (the rest waits for the next one).
_CHUNK = 16 * 1024 * 1024


@dataclass
class _Group:
    first: dict[str, Any]
    count: int = 0
    bytes: int = 0
    first_time: float = 0.0
    last_time: float = 0.0
    statuses: set[int] = field(default_factory=set)


def _key(entry: dict[str, Any]) -> tuple[Any, ...]:
    match = _PATH.match(entry.get("uri", ""))
    series = match.group(2) if match else ""
    kind = "metadata" if match and match.group(3) == "metadata" else "frames"
    return (entry.get("user") or None, entry.get("role") or None, entry.get("token_id") or None,
            entry.get("study") or None, series, kind, int(entry.get("status", 0)),
            entry.get("client") or None)


def audit_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Audit rows (column values) for access log entries, grouped as the module says."""
    groups: dict[tuple[Any, ...], _Group] = {}
    for entry in entries:
        group = groups.setdefault(_key(entry), _Group(first=entry, first_time=float(entry["msec"])))
        group.count += 1
        group.bytes += int(entry.get("bytes", 0))
        group.last_time = float(entry["msec"])
    rows = []
    for (user, role, jti, study, series, kind, status, client), group in groups.items():
        path = f"/api/pacs/dicom-web/studies/{study}/series/{series}/" + (
            "metadata" if kind == "metadata" else "instances/*/frames/*")
        rows.append({
            "time": datetime.fromtimestamp(group.first_time, UTC),
            "last_time": (datetime.fromtimestamp(group.last_time, UTC)
                          if group.count > 1 else None),
            "service": "nginx", "username": user, "role": role,
            "method": str(group.first.get("method", "GET"))[:16], "path": path,
            "study": study, "decision": "allow" if status < 400 else "deny",
            "status": status, "reason": "frame_store",
            "detail": f"{group.count} answer(s) from the frame store, {group.bytes} bytes",
            "client": client, "token_id": jti, "request_id": group.first.get("request_id"),
            "repeat_count": group.count,
        })
    return rows


class FrameAccessImporter:
    """Reads new lines of nginx's frame store log into the audit table (see the module)."""

    def __init__(self, log_path: Path, engine: Engine, state_path: Path,
                 interval: float = 1.0) -> None:
        self.log_path = log_path
        self.engine = engine
        self.state_path = state_path
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _position(self) -> tuple[int, int]:
        try:
            inode, offset = self.state_path.read_text().split()
            return int(inode), int(offset)
        except (FileNotFoundError, ValueError):
            return 0, 0

    def import_new(self) -> int:
        """Import the complete lines written since the last import; how many."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_file_lock(self.state_path.with_suffix(".lock")):
            try:
                handle = open(self.log_path, "rb")
            except FileNotFoundError:
                return 0
            with handle:
                stat = os.fstat(handle.fileno())
                inode, offset = self._position()
                if inode != stat.st_ino or offset > stat.st_size:
                    offset = 0  # a new or truncated log
                handle.seek(offset)
                data = handle.read(_CHUNK)
            complete = data[:data.rfind(b"\n") + 1]
            if not complete:
                return 0
            entries = []
            for line in complete.splitlines():
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    log.warning("unreadable frame store log line skipped: %.200r", line)
            rows = audit_rows(entries)
            if rows:
                with Session(self.engine) as session:
                    session.add_all(AuditRecord(**row) for row in rows)
                    session.commit()
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(f"{stat.st_ino} {offset + len(complete)}")
            os.replace(tmp, self.state_path)
            return len(entries)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.import_new()
            except Exception:  # the next round tries again from the same position
                log.exception("could not import the frame store access log")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="frame-access-audit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        try:
            self.import_new()  # what nginx flushed before the guard stops
        except Exception:
            log.exception("could not import the frame store access log")
