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


DENY = {"service": "proxy", "method": "GET", "decision": "deny", "status": 401,
        "reason": "invalid_token", "client": "10.0.0.9"}


def _rows(engine: object) -> list[dict[str, object]]:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return [dict(r) for r in conn.execute(
            select(AuditRecord.__table__).order_by(AuditRecord.id)).mappings()]


def _flood(writer: AuditWriter, records: list[dict[str, object]]) -> None:
    async def burst() -> None:
        await asyncio.gather(*[writer.record(**r) for r in records])

    asyncio.run(burst())


def test_repeated_refusals_fold_into_one_row_whose_count_adds_up(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    Base.metadata.create_all(engine)
    writer = AuditWriter(engine, repeat_window=60, repeat_burst=3)
    study = "1.2.3.4"
    floods = [{**DENY, "path": f"/api/pacs/dicom-web/studies/{study}/series/1.{i}",
               "study": study} for i in range(1500)]
    allowed = [{**RECORD, "username": "alice", "study": study, "client": "10.0.0.9"}
               for _ in range(50)]
    _flood(writer, floods[:700] + allowed + floods[700:])
    # Committed one by one too (another batch each): still the same row.
    for record in floods[:5]:
        writer.record_sync(**record)

    rows = _rows(engine)
    denied = [r for r in rows if r["decision"] == "deny"]
    # The first three are rows of their own (burst), one row counts the rest.
    assert [r["repeat_count"] for r in denied] == [1, 1, 1, 1502]
    row = denied[-1]
    assert row["reason"] == "invalid_token"
    assert row["study"] == study and row["last_time"] is not None
    assert row["last_time"] >= row["time"]
    # Every allowed request is a row of its own.
    assert [r["repeat_count"] for r in rows if r["decision"] == "allow"] == [1] * 50


def test_a_client_varying_its_refusals_is_bounded_per_window(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    Base.metadata.create_all(engine)
    writer = AuditWriter(engine, repeat_window=60, repeat_burst=2, client_rows=6)
    # Two kinds repeated: two rows each, then a counting row each (6 rows: the quota).
    records = [{**DENY, "path": f"/api/pacs/dicom-web/{kind}", "study": "1.2.9"}
               for _ in range(5) for kind in ("studies", "series")]
    # Then every request a kind of its own, to stay under the burst.
    records += [{**DENY, "path": f"/api/pacs/dicom-web/x{i}", "study": f"1.2.{i}"}
                for i in range(400)]
    records += [{**DENY, "client": "10.0.0.10", "path": "/api/pacs/dicom-web/studies"}] * 7
    _flood(writer, records)
    for record in records[:2] + records[100:110]:  # the open kinds still count in their rows
        writer.record_sync(**record)

    rows = _rows(engine)
    first = [r for r in rows if r["client"] == "10.0.0.9"]
    assert len(first) == 7  # the client's 6 rows, then one row for the rest
    assert sum(r["repeat_count"] for r in first) == 422
    by_path = {r["path"]: r["repeat_count"] for r in first if r["repeat_count"] > 1}
    assert by_path["/api/pacs/dicom-web/studies"] == 4 and \
        by_path["/api/pacs/dicom-web/series"] == 4
    (suppressed,) = [r for r in first if r["reason"] == "refusals_suppressed"]
    assert suppressed["repeat_count"] == 410 and suppressed["study"] is None
    assert suppressed["path"] == "*" and "invalid_token" in suppressed["detail"]
    # Another client is counted apart.
    other = [r for r in rows if r["client"] == "10.0.0.10"]
    assert [r["repeat_count"] for r in other] == [1, 1, 5]


def test_a_new_window_opens_a_new_row_and_studies_that_differ_are_cleared(
        tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    Base.metadata.create_all(engine)
    writer = AuditWriter(engine, repeat_window=60, repeat_burst=1)
    start = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    for second, study in [(0, "1.2.1"), (10, "1.2.1"), (59, "1.2.2"), (61, "1.2.3"),
                          (62, "1.2.3")]:
        writer.record_sync(**DENY, path="/api/pacs/dicom-web/studies", study=study,
                           time=start + timedelta(seconds=second))
    rows = _rows(engine)
    assert [(r["repeat_count"], r["study"]) for r in rows] == \
        [(1, "1.2.1"), (2, None), (1, "1.2.3"), (1, "1.2.3")]


def test_window_zero_writes_every_refusal(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    Base.metadata.create_all(engine)
    writer = AuditWriter(engine, repeat_window=0)
    _flood(writer, [{**DENY, "path": "/x"}] * 30)
    assert [r["repeat_count"] for r in _rows(engine)] == [1] * 30


def test_a_failed_batch_counts_nothing_then_the_next_one_counts_again(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    Base.metadata.create_all(engine)
    writer = AuditWriter(engine, repeat_window=60, repeat_burst=0)
    writer.record_sync(**DENY, path="/x")
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("create trigger no_update before update on audit "
                          "begin select raise(abort, 'audit locked'); end"))
    with pytest.raises(Exception, match="audit locked"):
        writer.record_sync(**DENY, path="/x")
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("drop trigger no_update"))
    writer.record_sync(**DENY, path="/x")
    assert [r["repeat_count"] for r in _rows(engine)] == [2]


def test_path_class_folds_object_segments() -> None:
    from neuronova_lib.db.audit import path_class

    assert path_class("/api/pacs/dicom-web/studies/1.2.3/series/4.5/instances/6.7/frames/1,2") \
        == "/api/pacs/dicom-web/studies/*/series/*/instances/*/frames/*"
    assert path_class("/a/" + "b" * 80 + "/c?token=x") == "/a/*/c"
