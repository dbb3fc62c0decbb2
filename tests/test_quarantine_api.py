"""The ingest quarantine through the real API (admins only, audited) and the ``neuronova`` CLI.

Every entry is a file the gate really refuses (``tests/bad_inputs.py``,
checked with :func:`neuronova_lib.ingest.check_bytes` for its reason), kept in
a :class:`~neuronova_lib.ingest.Quarantine` in a temporary data dir; the API is
the real app under FastAPI's ``TestClient``, the CLI a separate process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from bad_inputs import bad_inputs, nested
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neuronova_lib.config import REPO_ROOT, Settings
from neuronova_lib.db.users import ensure_demo_users
from neuronova_lib.ingest import REASONS, Limits, Quarantine, Refusal, check_bytes
from services.api.app import create_app
from services.api.quarantine_retention import RetentionSweeper
from test_api import DEMO_PASSWORD, settings  # noqa: F401 - the same fresh data dir

BASE = "/api/ingest/quarantine"
NEURONOVA = [sys.executable, "-m", "neuronova_lib.cli"]


@dataclass(frozen=True)
class Kept:
    sha: str
    data: bytes
    reason: str


@cache
def _cases() -> dict[str, bytes]:
    cases = {name: data for name, (data, _) in bad_inputs().items()}
    cases["nested_48"] = nested(48)
    return cases


def refuse(store: Quarantine, data: bytes, *, sender: str, route: str,
           when: datetime) -> Kept:
    """Check ``data`` with the gate's checks and quarantine the refusal, as the gate does."""
    with pytest.raises(Refusal) as info:
        check_bytes(data, Limits())
    entry = store.put(data, info.value.reason, info.value.message, sender=sender, route=route,
                      when=when)
    return Kept(entry.sha256, data, info.value.reason)


# -- fixtures ------------------------------------------------------------------


@pytest.fixture
def store(settings: Settings) -> Quarantine:
    return Quarantine(settings)


@pytest.fixture
def kept(store: Quarantine) -> dict[str, Kept]:
    """Four refused files, one refused twice, one older than the retention (30 days)."""
    now = datetime.now(UTC)
    cases = _cases()
    first_nested = refuse(store, cases["nested_48"], sender="mallory", route="stow",
                          when=now - timedelta(hours=5))
    assert first_nested.reason == "nesting_too_deep"
    return {
        "nested": refuse(store, cases["nested_48"], sender="bob", route="upload",
                         when=now - timedelta(hours=1)),
        "ybr": refuse(store, cases["ybr_one_sample"], sender="bob", route="upload",
                      when=now - timedelta(hours=2)),
        "bits": refuse(store, cases["bits_allocated_0"], sender="carol", route="transcode",
                       when=now - timedelta(hours=3)),
        "expired": refuse(store, cases["pixel_data_longer"], sender="dave", route="stow",
                          when=now - timedelta(days=45)),
    }


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI, settings: Settings, kept: dict[str, Kept]) -> Iterator[TestClient]:
    assert ensure_demo_users(settings) is not None
    with TestClient(app) as test_client:
        yield test_client


def token_for(client: TestClient, username: str) -> dict[str, str]:
    response = client.post("/api/auth/token",
                           data={"username": username, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    return token_for(client, "admin")


def audit_rows(client: TestClient, admin: dict[str, str], **params: str) -> list[dict]:
    response = client.get("/api/audit", headers=admin, params={"limit": "1000", **params})
    assert response.status_code == 200, response.text
    return list(response.json())


# -- retention -----------------------------------------------------------------


def test_startup_purges_expired_and_the_sweeper_runs_with_the_app(
    app: FastAPI, settings: Settings, store: Quarantine, kept: dict[str, Kept]
) -> None:
    assert store.get(kept["expired"].sha) is not None
    with TestClient(app):
        sweeper = app.state.quarantine_retention
        assert sweeper.removed == [kept["expired"].sha]
        assert store.get(kept["expired"].sha) is None
        assert {e.sha256 for e in store.list()} == {
            kept[k].sha for k in ("nested", "ybr", "bits")}
        assert sweeper.interval == 3600
        thread = sweeper._thread
        assert thread is not None and thread.is_alive()
    assert not thread.is_alive()  # stopped with the app


def test_sweeper_purges_every_interval_and_stops(settings: Settings, store: Quarantine) -> None:
    sweeper = RetentionSweeper(settings, interval=0.2)
    sweeper.start()
    try:
        assert sweeper.sweeps == 1 and sweeper.removed == []
        old = refuse(store, _cases()["ybr_one_sample"], sender="x", route="upload",
                     when=datetime.now(UTC) - timedelta(days=31))
        fresh = refuse(store, _cases()["nested_48"], sender="x", route="upload",
                       when=datetime.now(UTC) - timedelta(days=29))
        deadline = time.monotonic() + 20
        while store.get(old.sha) is not None:
            assert time.monotonic() < deadline, "the sweeper did not purge within 20 s"
            time.sleep(0.05)
        assert sweeper.removed == [old.sha]
        assert store.get(fresh.sha) is not None
    finally:
        sweeper.stop()
    sweeps = sweeper.sweeps
    time.sleep(0.5)
    assert sweeper.sweeps == sweeps  # stopped


# -- admin routes ---------------------------------------------------------------


def test_list_newest_first_with_reasons_and_retention(
    client: TestClient, admin: dict[str, str], kept: dict[str, Kept]
) -> None:
    body = client.get(BASE, headers=admin).json()
    assert body["total"] == 3 and body["retention_days"] == 30
    assert body["offset"] == 0 and body["limit"] == 100
    entries = body["entries"]
    assert [e["sha256"] for e in entries] == [kept[k].sha for k in ("nested", "ybr", "bits")]
    top = entries[0]
    assert top["reason"] == "nesting_too_deep"
    assert top["reason_description"] == REASONS["nesting_too_deep"]
    assert "nest deeper" in top["message"]
    assert top["size"] == len(kept["nested"].data)
    assert [(s["sender"], s["route"]) for s in top["submissions"]] == [
        ("mallory", "stow"), ("bob", "upload")]
    assert datetime.fromisoformat(top["first_seen"]) < datetime.fromisoformat(top["last_seen"])
    assert top["file_url"] == f"{BASE}/{kept['nested'].sha}/file"
    assert {e["reason"] for e in entries} == {"nesting_too_deep", "photometric_mismatch",
                                              "bad_bits"}


def test_list_filters_and_paging(
    client: TestClient, admin: dict[str, str], kept: dict[str, Kept]
) -> None:
    def shas(**params: str) -> list[str]:
        response = client.get(BASE, headers=admin, params=params)
        assert response.status_code == 200, response.text
        return [e["sha256"] for e in response.json()["entries"]]

    assert shas(reason="bad_bits") == [kept["bits"].sha]
    assert shas(reason="image_too_large") == []
    assert shas(route="upload") == [kept["nested"].sha, kept["ybr"].sha]
    assert shas(route="stow") == [kept["nested"].sha]  # its first submission came by STOW-RS
    assert shas(route="upload", reason="photometric_mismatch") == [kept["ybr"].sha]
    since = datetime.now(UTC) - timedelta(minutes=150)
    assert shas(since=since.isoformat()) == [kept["nested"].sha, kept["ybr"].sha]
    naive = since.replace(tzinfo=None).isoformat()  # taken as UTC
    assert shas(since=naive) == [kept["nested"].sha, kept["ybr"].sha]

    page = client.get(BASE, headers=admin, params={"limit": 1, "offset": 1}).json()
    assert page["total"] == 3 and [e["sha256"] for e in page["entries"]] == [kept["ybr"].sha]
    assert shas(limit="2", offset="2") == [kept["bits"].sha]
    assert shas(offset="3") == []
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"since": "yesterday"}):
        assert client.get(BASE, headers=admin, params=bad).status_code == 422, bad


def test_show_and_download(client: TestClient, admin: dict[str, str],
                           kept: dict[str, Kept]) -> None:
    sha = kept["ybr"].sha
    one = client.get(f"{BASE}/{sha}", headers=admin)
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["sha256"] == sha and body["reason"] == "photometric_mismatch"
    assert body["submissions"][0]["sender"] == "bob"
    assert body["submissions"][0]["reason_description"] == REASONS["photometric_mismatch"]
    assert client.get(f"{BASE}/{sha.upper()}", headers=admin).json()["sha256"] == sha

    for k in ("nested", "ybr", "bits"):
        got = client.get(f"{BASE}/{kept[k].sha}/file", headers=admin)
        assert got.status_code == 200, got.text
        assert got.content == kept[k].data
        assert hashlib.sha256(got.content).hexdigest() == kept[k].sha
        assert got.headers["content-type"] == "application/dicom"
        assert got.headers["content-disposition"] == f'attachment; filename="{kept[k].sha}.dcm"'
        assert got.headers["x-content-type-options"] == "nosniff"


def test_missing_and_malformed_sha(client: TestClient, admin: dict[str, str],
                                   kept: dict[str, Kept]) -> None:
    absent = hashlib.sha256(b"never refused").hexdigest()
    for method, path in (("GET", f"{BASE}/{absent}"), ("GET", f"{BASE}/{absent}/file"),
                         ("DELETE", f"{BASE}/{absent}")):
        response = client.request(method, path, headers=admin)
        assert response.status_code == 404, (method, path)
        detail = response.json()["detail"]
        assert absent in detail and "GET /api/ingest/quarantine" in detail
    for bad in ("not-a-sha", "g" * 64, kept["ybr"].sha[:63], kept["ybr"].sha + "0",
                "..%2F..%2Fsecrets"):
        for method, path in (("GET", f"{BASE}/{bad}"), ("GET", f"{BASE}/{bad}/file"),
                             ("DELETE", f"{BASE}/{bad}")):
            status = client.request(method, path, headers=admin).status_code
            assert status in (404, 405, 422), (method, path, status)
    for method, path in (("GET", f"{BASE}/not-a-sha"), ("GET", f"{BASE}/{'g' * 64}/file"),
                         ("DELETE", f"{BASE}/{kept['ybr'].sha[:63]}")):
        response = client.request(method, path, headers=admin)
        assert response.status_code == 422, (method, path)
        assert "sha256" in response.text or "pattern" in response.text
    assert len(client.get(BASE, headers=admin).json()["entries"]) == 3


def test_delete(client: TestClient, admin: dict[str, str], store: Quarantine,
                kept: dict[str, Kept]) -> None:
    sha = kept["bits"].sha
    path = store.get(sha).path  # type: ignore[union-attr]
    response = client.delete(f"{BASE}/{sha}", headers=admin)
    assert response.status_code == 204 and response.content == b""
    assert not path.exists() and store.get(sha) is None
    assert client.get(f"{BASE}/{sha}", headers=admin).status_code == 404
    assert client.delete(f"{BASE}/{sha}", headers=admin).status_code == 404
    assert [e["sha256"] for e in client.get(BASE, headers=admin).json()["entries"]] == [
        kept["nested"].sha, kept["ybr"].sha]


def test_purge(client: TestClient, admin: dict[str, str], store: Quarantine,
               kept: dict[str, Kept]) -> None:
    old = refuse(store, _cases()["claims_65535x65535"], sender="eve", route="upload",
                 when=datetime.now(UTC) - timedelta(days=31))
    assert client.get(BASE, headers=admin).json()["total"] == 4
    first = client.post(f"{BASE}/purge", headers=admin)
    assert first.status_code == 200, first.text
    assert first.json()["removed"] == [old.sha]
    assert first.json()["older_than_days"] == 30 and first.json()["remaining"] == 3
    assert store.get(old.sha) is None
    assert client.post(f"{BASE}/purge", headers=admin).json()["removed"] == []

    # older_than_days in the query (2.5 h: only "bits", refused 3 h ago) or in the body.
    by_query = client.post(f"{BASE}/purge", headers=admin,
                           params={"older_than_days": 2.5 / 24}).json()
    assert by_query["removed"] == [kept["bits"].sha] and by_query["remaining"] == 2
    assert client.post(f"{BASE}/purge", headers=admin, params={"older_than_days": 1},
                       json={"older_than_days": 2}).status_code == 400
    assert client.post(f"{BASE}/purge", headers=admin,
                       json={"older_than_days": -1}).status_code == 422
    by_body = client.post(f"{BASE}/purge", headers=admin, json={"older_than_days": 0}).json()
    assert set(by_body["removed"]) == {kept["nested"].sha, kept["ybr"].sha}
    assert by_body["remaining"] == 0 and store.list() == []


@pytest.mark.parametrize("username", ["clinician", "scientist", "owner"])
def test_non_admins_get_403_everywhere(
    client: TestClient, admin: dict[str, str], store: Quarantine, kept: dict[str, Kept],
    username: str,
) -> None:
    user = token_for(client, username)
    sha = kept["ybr"].sha
    calls = [("GET", BASE), ("GET", f"{BASE}/{sha}"), ("GET", f"{BASE}/{sha}/file"),
             ("DELETE", f"{BASE}/{sha}"), ("POST", f"{BASE}/purge")]
    for method, path in calls:
        response = client.request(method, path, headers=user)
        assert response.status_code == 403, (method, path, response.text)
        assert "admin" in response.json()["detail"]
        assert client.request(method, path).status_code == 401, (method, path)
    assert len(store.list()) == 3 and store.get(sha) is not None
    denied = audit_rows(client, admin, decision="deny", username=username)
    assert sorted((r["method"], r["path"]) for r in denied) == sorted(calls)
    assert all(r["reason"] == "role" and r["status"] == 403 for r in denied)


def test_every_admin_call_is_audited(client: TestClient, admin: dict[str, str],
                                     kept: dict[str, Kept]) -> None:
    sha = kept["bits"].sha
    absent = "0" * 64
    client.get(BASE, headers=admin, params={"reason": "bad_bits"})
    client.get(f"{BASE}/{sha}", headers=admin)
    client.get(f"{BASE}/{sha}/file", headers=admin)
    client.get(f"{BASE}/{absent}", headers=admin)
    client.delete(f"{BASE}/{sha}", headers=admin)
    client.post(f"{BASE}/purge", headers=admin)
    rows = [r for r in audit_rows(client, admin, username="admin", service="api")
            if r["path"].startswith(BASE)]
    got = sorted((r["reason"], r["method"], r["path"], r["status"]) for r in rows)
    assert got == sorted([
        ("quarantine_list", "GET", BASE, 200),
        ("quarantine_read", "GET", f"{BASE}/{sha}", 200),
        ("quarantine_download", "GET", f"{BASE}/{sha}/file", 200),
        ("quarantine_read", "GET", f"{BASE}/{absent}", 404),
        ("quarantine_delete", "DELETE", f"{BASE}/{sha}", 204),
        ("quarantine_purge", "POST", f"{BASE}/purge", 200),
    ])
    assert all(r["decision"] == "allow" and r["role"] == "admin" for r in rows)
    by_reason = {r["reason"]: r for r in rows if r["status"] != 404}
    assert "reason" in by_reason["quarantine_list"]["detail"]
    assert sha in by_reason["quarantine_download"]["detail"]
    assert "removed 0" in by_reason["quarantine_purge"]["detail"]


# -- the CLI -------------------------------------------------------------------


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEURONOVA_")}
    env["NEURONOVA_HOME"] = str(settings.home)
    return subprocess.run([*NEURONOVA, "quarantine", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def ok(settings: Settings, *args: str) -> str:
    result = cli(settings, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.e2e  # starts processes
def test_cli_list_and_json(settings: Settings, kept: dict[str, Kept]) -> None:
    lines = ok(settings, "list").splitlines()
    assert lines[0].split() == ["SHA256", "SIZE", "REASON", "ROUTE", "SENDER", "LAST", "SEEN"]
    rows = [line.split() for line in lines[1:-1]]
    order = ("nested", "ybr", "bits", "expired")
    assert [r[0] for r in rows] == [kept[k].sha[:16] for k in order]
    assert rows[0][1:5] == [str(len(kept["nested"].data)), "nesting_too_deep", "upload", "bob"]
    assert rows[2][2:5] == ["bad_bits", "transcode", "carol"]
    assert lines[-1].startswith("4 file(s)") and "retention 30 days" in lines[-1]

    body = json.loads(ok(settings, "list", "--json"))
    assert body["total"] == 4 and body["retention_days"] == 30
    assert [e["sha256"] for e in body["entries"]] == [kept[k].sha for k in order]
    assert body["entries"][0]["submissions"][0]["sender"] == "mallory"
    assert body["entries"][1]["reason_description"] == REASONS["photometric_mismatch"]


@pytest.mark.e2e  # starts processes
def test_cli_show_export_delete_by_prefix(settings: Settings, store: Quarantine,
                                          kept: dict[str, Kept], tmp_path: Path) -> None:
    sha = kept["ybr"].sha
    shown = ok(settings, "show", sha[:8])
    assert sha in shown and "photometric_mismatch" in shown and "bob" in shown
    assert json.loads(ok(settings, "show", sha.upper(), "--json"))["sha256"] == sha

    out = tmp_path / "out"
    out.mkdir()
    ok(settings, "export", sha[:10], str(out))
    assert (out / f"{sha}.dcm").read_bytes() == kept["ybr"].data
    named = out / "copy.dcm"
    ok(settings, "export", kept["bits"].sha[:12], str(named))
    assert named.read_bytes() == kept["bits"].data
    refused = cli(settings, "export", sha[:8], str(named))
    assert refused.returncode != 0 and "--force" in refused.stderr
    assert named.read_bytes() == kept["bits"].data
    ok(settings, "export", sha[:8], str(named), "--force")
    assert named.read_bytes() == kept["ybr"].data

    assert sha in ok(settings, "delete", sha[:9])
    assert store.get(sha) is None and len(store.list()) == 3
    gone = cli(settings, "show", sha[:8])
    assert gone.returncode != 0 and "no quarantined file matches" in gone.stderr
    for bad in ("abc", "1234567", "zzzzzzzz", sha + "0"):
        result = cli(settings, "show", bad)
        assert result.returncode != 0 and "at least 8 hex digits" in result.stderr, bad


@pytest.mark.e2e  # starts processes
def test_cli_purge(settings: Settings, store: Quarantine, kept: dict[str, Kept]) -> None:
    out = ok(settings, "purge")
    assert f"removed {kept['expired'].sha}" in out and "purged 1 file(s)" in out
    assert store.get(kept["expired"].sha) is None and len(store.list()) == 3
    out = ok(settings, "purge", "--older-than-days", str(2.5 / 24))
    assert f"removed {kept['bits'].sha}" in out and "purged 1 file(s)" in out
    assert "purged 0 file(s)" in ok(settings, "purge")
    ok(settings, "purge", "--older-than-days", "0")
    assert store.list() == []


def _two_with_one_prefix() -> tuple[bytes, bytes]:
    """Two byte strings whose sha256 share their first 8 hex digits (a birthday search)."""
    seen: dict[str, bytes] = {}
    for i in range(2_000_000):
        data = b"not a DICOM file %d" % i
        prefix = hashlib.sha256(data).hexdigest()[:8]
        if prefix in seen:
            return seen[prefix], data
        seen[prefix] = data
    raise AssertionError("no 32-bit prefix collision in 2 million hashes")


@pytest.mark.e2e  # starts processes
def test_cli_refuses_an_ambiguous_prefix(settings: Settings, store: Quarantine) -> None:
    one, two = _two_with_one_prefix()
    now = datetime.now(UTC)
    a = refuse(store, one, sender="x", route="upload", when=now)
    b = refuse(store, two, sender="y", route="stow", when=now)
    assert a.reason == b.reason == "not_dicom"
    assert a.sha[:8] == b.sha[:8] and a.sha != b.sha
    result = cli(settings, "show", a.sha[:8])
    assert result.returncode != 0
    assert "ambiguous" in result.stderr and a.sha in result.stderr and b.sha in result.stderr
    deleted = cli(settings, "delete", a.sha[:8])
    assert deleted.returncode != 0 and "ambiguous" in deleted.stderr
    assert len(store.list()) == 2  # nothing deleted
    common = os.path.commonprefix([a.sha, b.sha])
    assert a.sha in ok(settings, "show", a.sha[:len(common) + 1])
    assert b.sha in ok(settings, "delete", b.sha[:len(common) + 1])
    assert [e.sha256 for e in store.list()] == [a.sha]
