"""The group-committing audit writer: durable before the answer, fails closed."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text

from neuronova_lib.db.audit import AuditWriter
from neuronova_lib.db.engine import get_engine
from neuronova_lib.db.models import AuditRecord, Base

RECORD = {"service": "proxy", "method": "GET", "path": "/x", "decision": "allow",
          "status": 200, "reason": "allowed"}


def _writer(tmp_path: Path) -> tuple[AuditWriter, object]:
    engine = get_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    Base.metadata.create_all(engine)
    return AuditWriter(engine), engine


def test_every_awaited_record_is_committed(tmp_path: Path) -> None:
    writer, engine = _writer(tmp_path)

    async def burst() -> None:
        await asyncio.gather(*[writer.record(**RECORD, username=f"u{i}") for i in range(300)])

    asyncio.run(burst())
    with engine.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(select(AuditRecord)).all()
    assert sorted(r.username for r in rows) == sorted(f"u{i}" for i in range(300))


def test_times_are_stored_as_the_orm_stores_them(tmp_path: Path) -> None:
    writer, engine = _writer(tmp_path)
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    writer.record_sync(**RECORD, time=moment)
    with engine.connect() as conn:  # type: ignore[attr-defined]
        assert conn.execute(text("select time from audit")).scalar() == "2026-01-02 01:04:05.678901"
        since = datetime(2026, 1, 2, 1, 0, tzinfo=timezone.utc)
        assert conn.execute(select(AuditRecord).where(AuditRecord.time >= since)).first()


def test_a_failed_write_fails_the_request(tmp_path: Path) -> None:
    writer, engine = _writer(tmp_path)
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("drop table audit"))

    async def one() -> None:
        await writer.record(**RECORD)

    with pytest.raises(Exception, match="audit"):
        asyncio.run(one())


def test_unknown_fields_are_refused(tmp_path: Path) -> None:
    writer, _ = _writer(tmp_path)
    with pytest.raises(TypeError, match="unknown audit fields"):
        writer.record_sync(**RECORD, colour="red")
