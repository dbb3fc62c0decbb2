"""GET /api/patients on the real API under uvicorn: the chain through the platform's own
FHIR facade (over loopback, with a token minted for the caller) and a recorded OpenEMR."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from fhir_servers import api_settings, serve_api
from neuronova_lib.config import Settings
from neuronova_lib.db.engine import session_factory
from neuronova_lib.db.models import AuditRecord
from neuronova_lib.db.users import ensure_demo_users
from neuronova_lib.demo.openemr_server import RecordedOpenEMR

CLIENT_ID, SECRET = "neuronova-api-test", "api-test-secret"


@pytest.fixture
def openemr() -> Iterator[RecordedOpenEMR]:
    server = RecordedOpenEMR(CLIENT_ID, SECRET)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(tmp_path: Path, openemr: RecordedOpenEMR) -> Iterator[tuple[str, Settings]]:
    settings = api_settings(tmp_path / "home", openemr_url=openemr.url,
                            openemr_client_id=CLIENT_ID, openemr_client_secret=SECRET)
    ensure_demo_users(settings)
    with serve_api(settings) as url:
        yield url, settings


def bearer(url: str, username: str) -> dict[str, str]:
    response = httpx.post(f"{url}/api/auth/token", data={
        "username": username, "password": "fhir-test-password"})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_patient_from_openemr_then_cache_with_audit(api: tuple[str, Settings],
                                                    openemr: RecordedOpenEMR) -> None:
    url, settings = api
    record = openemr.records[0]  # a demo patient: pubpid is a demo study's Patient ID
    h = bearer(url, "clinician")
    first = httpx.get(f"{url}/api/patients/{record['pubpid']}", headers=h, timeout=30)
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["source"], body["on_fhir"], body["unavailable"]) == ("openemr", True, {})
    assert body["name"] == f"{record['lname']}^{record['fname']}"
    fhir_id = body["patient"]["id"]
    # The facade holds it, created in the name of the clinician who asked.
    found = httpx.get(f"{url}/fhir/R4/Patient",
                      params={"identifier": f"{settings.patient_id_system}|{record['pubpid']}"},
                      headers=h, timeout=10).json()
    assert found["total"] == 1 and found["entry"][0]["resource"]["id"] == fhir_id
    second = httpx.get(f"{url}/api/patients/{record['pubpid']}", headers=h, timeout=30).json()
    assert second["source"] == "cache" and second["patient"]["id"] == fhir_id
    with session_factory(settings.sqlalchemy_url)() as session:
        rows = list(session.scalars(select(AuditRecord).order_by(AuditRecord.id)))
    reasons = [(r.username, r.reason) for r in rows if r.reason.startswith(("patient", "fhir"))]
    assert ("clinician", "fhir_create") in reasons
    assert reasons.count(("clinician", "patient_read")) == 2


def test_roles_missing_and_unavailable(api: tuple[str, Settings],
                                       openemr: RecordedOpenEMR) -> None:
    url, _ = api
    assert httpx.get(f"{url}/api/patients/X1", headers=bearer(url, "scientist")
                     ).status_code == 403
    assert httpx.get(f"{url}/api/patients/X1").status_code == 401
    h = bearer(url, "admin")
    missing = httpx.get(f"{url}/api/patients/NOT-A-PATIENT", headers=h, timeout=30)
    assert missing.status_code == 404
    assert missing.json()["asked"] == ["cache", "fhir", "openemr"]
    openemr.mode = "garbage"
    down = httpx.get(f"{url}/api/patients/{openemr.records[1]['pubpid']}", headers=h, timeout=30)
    assert down.status_code == 503 and "garbage" in down.json()["unavailable"]["openemr"]
    openemr.mode = "normal"
    search = httpx.get(f"{url}/api/patients", params={"query": "Garcia"}, headers=h, timeout=30)
    assert search.status_code == 200
    assert sorted(p["name"] for p in search.json()["patients"]) == ["Garcia^Luis", "Garcia^Maria"]
    assert httpx.get(f"{url}/api/patients/bad%5Cid", headers=h).status_code == 400


def test_the_client_reads_a_patient_record(api: tuple[str, Settings],
                                           openemr: RecordedOpenEMR) -> None:
    """Client.patient: the record and where it came from; a miss is PatientNotFound with
    the sources asked and those down; a role without access is refused (403)."""
    import requests

    from neuronova_lib.dicomweb.session import connect
    from neuronova_lib.patients import PatientNotFound

    url, _ = api
    record = openemr.records[2]
    token = bearer(url, "clinician")["Authorization"].split()[1]
    with connect(url, token=token) as client:
        found = client.patient(record["pubpid"])
        assert (found["source"], found["name"], found["stale"]) == (
            "openemr", f"{record['lname']}^{record['fname']}", False)
        assert found["patient"]["birthDate"] == record["DOB"]
        assert client.patient(record["pubpid"])["source"] == "cache"
        with pytest.raises(PatientNotFound) as missing:
            client.patient("NO SUCH/PATIENT")
        assert (missing.value.asked, missing.value.unavailable) == (
            ["cache", "fhir", "openemr"], {})
        openemr.mode = "error"
        with pytest.raises(PatientNotFound) as down:
            client.patient(openemr.records[3]["pubpid"])
        assert list(down.value.unavailable) == ["openemr"]
        openemr.mode = "normal"
    owner = bearer(url, "owner")["Authorization"].split()[1]
    with connect(url, token=owner) as client, pytest.raises(requests.HTTPError) as refused:
        client.patient(record["pubpid"])
    assert refused.value.response.status_code == 403
