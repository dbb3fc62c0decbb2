"""A flood of refused requests through nginx leaves a bounded audit trail whose counts add up.

2,000 requests with a bad token (a loop on loopback) must not become 2,000
rows: past a burst of rows of their own, the guard's audit writer counts
repeated refusals of one kind from one client in one row. Allowed requests sent in between stay one row
each, so "who read this study" is still answered row by row.
"""

from __future__ import annotations

from typing import Any

import pydicom
import pytest
import requests
from sqlalchemy import select

from neuronova_lib.db.audit import path_class
from neuronova_lib.db.engine import get_engine
from neuronova_lib.db.models import AuditRecord

pytestmark = pytest.mark.e2e

FLOOD = 2000


def _refusals(platform: Any, reason: str, kind: str) -> list[dict[str, Any]]:
    query = select(AuditRecord.__table__).where(
        AuditRecord.service == "proxy", AuditRecord.reason == reason,
        AuditRecord.status == 401, AuditRecord.decision == "deny")
    with get_engine(platform.settings.sqlalchemy_url).connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    return [r for r in rows if path_class(r["path"]) == kind]


def test_a_flood_of_bad_tokens_is_counted_in_few_rows(platform: Any) -> None:
    # A study of its own: the kind of path is still ".../studies/*/series", so rows that
    # other tests' refusals opened may take part of the count; compare before and after.
    path = f"/api/pacs/dicom-web/studies/{pydicom.uid.generate_uid()}/series"
    kind = path_class(path)
    session = requests.Session()
    bad = {"Authorization": "Bearer not.a.valid-token"}
    first = session.get(f"{platform.url}{path}", headers=bad, timeout=10)
    assert first.status_code == 401
    reason = first.json()["reason"]
    before = _refusals(platform, reason, kind)
    good = {"Authorization": f"Bearer {platform.access_token('clinician')}"}
    allowed_ids = []

    for i in range(FLOOD):
        response = session.get(f"{platform.url}{path}", headers=bad, timeout=10)
        assert response.status_code == 401 and response.json()["reason"] == reason
        if i % 100 == 0:
            read = session.get(f"{platform.url}/api/pacs/dicom-web/studies/"
                               f"{platform.study_a.study}/series", headers=good, timeout=10)
            assert read.status_code == 200
            allowed_ids.append(read.headers["X-Request-ID"])

    after = _refusals(platform, reason, kind)
    # Per window (60 s): the burst as rows of their own, then one row counting the rest.
    burst = platform.settings.audit_repeat_burst
    assert burst < FLOOD // 4
    new_rows = len(after) - len(before)
    assert 0 < new_rows <= 2 * (burst + 1), new_rows
    counted = sum(r["repeat_count"] for r in after) - sum(r["repeat_count"] for r in before)
    assert counted == FLOOD
    assert max(r["repeat_count"] for r in after) >= FLOOD - 2 * burst - 1
    assert all(r["last_time"] is not None for r in after if r["repeat_count"] > 1)
    for request_id in allowed_ids:
        row = platform.wait_for_audit(request_id, service="proxy")
        assert (row["decision"], row["repeat_count"], row["study"]) == \
            ("allow", 1, platform.study_a.study)
    # Admins see the count through the API.
    admin = {"Authorization": f"Bearer {platform.login('admin')}"}
    listed = session.get(f"{platform.url}/api/audit", headers=admin, timeout=10,
                         params={"decision": "deny", "service": "proxy", "limit": 1000})
    assert listed.status_code == 200
    assert max(r["repeat_count"] for r in listed.json()) >= FLOOD - 2 * burst - 1
