"""The platform's FHIR R4 facade (/fhir/R4) on the real API app and a real SQLite database:
every interaction, paging, validation (400/422), OperationOutcome errors, role rules and
the audit of reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api_settings import service_settings
from neuronova_lib.config import Settings
from neuronova_lib.db.engine import session_factory
from neuronova_lib.db.models import AuditRecord
from neuronova_lib.db.users import ensure_demo_users
from services.api.app import create_app

PASSWORD = "demo-password-for-fhir-tests"
BASE = "/fhir/R4"
SYSTEM = "urn:neuronova:patient-id"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    with service_settings(tmp_path / "home", monkeypatch, PASSWORD) as current:
        yield current


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    ensure_demo_users(settings)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def auth(client: TestClient, username: str) -> dict[str, str]:
    response = client.post("/api/auth/token", data={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def patient(value: str, family: str = "Doe", given: str = "Jane", **extra: Any
            ) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}],
            "name": [{"family": family, "given": [given]}], "gender": "female",
            "birthDate": "1970-03-04", **extra}


def test_create_read_vread_update(client: TestClient) -> None:
    h = auth(client, "clinician")
    created = client.post(f"{BASE}/Patient", json=patient("P1"), headers=h)
    assert created.status_code == 201, created.text
    assert created.headers["content-type"].startswith("application/fhir+json")
    body = created.json()
    pid = body["id"]
    assert body["meta"]["versionId"] == "1" and created.headers["etag"] == 'W/"1"'
    assert created.headers["location"].endswith(f"/fhir/R4/Patient/{pid}/_history/1")
    assert client.get(f"{BASE}/Patient/{pid}", headers=h).json()["name"][0]["family"] == "Doe"

    changed = {**body, "name": [{"family": "Roe", "given": ["Jane"]}]}
    stale = client.put(f"{BASE}/Patient/{pid}", json=changed, headers={**h, "If-Match": 'W/"7"'})
    assert stale.status_code == 412 and stale.json()["resourceType"] == "OperationOutcome"
    updated = client.put(f"{BASE}/Patient/{pid}", json=changed, headers={**h, "If-Match": 'W/"1"'})
    assert updated.status_code == 200 and updated.json()["meta"]["versionId"] == "2"
    assert client.get(f"{BASE}/Patient/{pid}/_history/1", headers=h).json()["name"][0][
        "family"] == "Doe"
    assert client.get(f"{BASE}/Patient/{pid}/_history/2", headers=h).json()["name"][0][
        "family"] == "Roe"
    missing = client.get(f"{BASE}/Patient/{pid}/_history/3", headers=h)
    assert missing.status_code == 404 and missing.json()["issue"][0]["code"] == "not-found"
    # Searching by the old family name no longer finds it (search rows follow the update).
    assert client.get(f"{BASE}/Patient", params={"family": "doe"}, headers=h).json()["total"] == 0
    assert client.get(f"{BASE}/Patient", params={"family": "roe"}, headers=h).json()["total"] == 1
    # Update-as-create with the client's id.
    put_new = client.put(f"{BASE}/Patient/chosen-id", json={**patient("P9"), "id": "chosen-id"},
                         headers=h)
    assert put_new.status_code == 201 and put_new.json()["id"] == "chosen-id"


def test_conditional_create_on_identifier(client: TestClient) -> None:
    h = {**auth(client, "admin"), "If-None-Exist": f"identifier={SYSTEM}|C1"}
    first = client.post(f"{BASE}/Patient", json=patient("C1"), headers=h)
    second = client.post(f"{BASE}/Patient", json=patient("C1", family="Other"), headers=h)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert second.json()["name"][0]["family"] == "Doe"  # the existing one, unchanged


def test_search_parameters_and_paging(client: TestClient) -> None:
    h = auth(client, "clinician")
    for n in range(5):
        client.post(f"{BASE}/Patient", json=patient(f"S{n}", family=f"Smith{n % 2}",
                                                    given=f"Ann{n}",
                                                    birthDate=f"198{n}-01-15",
                                                    gender="male" if n % 2 else "female"),
                    headers=h).raise_for_status()

    def total(**params: str) -> int:
        response = client.get(f"{BASE}/Patient", params=params, headers=h)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        return int(bundle["total"])

    assert total(identifier=f"{SYSTEM}|S3") == 1
    assert total(identifier="S3") == 1
    assert total(identifier="other-system|S3") == 0
    assert total(name="smi") == 5 and total(name="ann2") == 1
    assert total(family="Smith1") == 2 and total(**{"family:exact": "smith1"}) == 0
    assert total(**{"family:contains": "ith0"}) == 3
    assert total(gender="male") == 2
    assert total(birthdate="1982-01-15") == 1 and total(birthdate="1982") == 1
    assert total(birthdate="ge1983-01-01") == 2 and total(birthdate="lt1981-06-01") == 2
    assert total(family="smith0", gender="female") == 3

    first = client.get(f"{BASE}/Patient", params={"_count": 2}, headers=h).json()
    assert first["total"] == 5 and len(first["entry"]) == 2
    links = {link["relation"]: link["url"] for link in first["link"]}
    seen = [e["resource"]["id"] for e in first["entry"]]
    while "next" in links:
        page = client.get(links["next"].split("testserver", 1)[-1], headers=h).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        links = {link["relation"]: link["url"] for link in page["link"]}
    assert len(seen) == len(set(seen)) == 5

    bad = client.get(f"{BASE}/Patient", params={"shoe-size": "9"}, headers=h)
    assert bad.status_code == 400 and "shoe-size" in bad.json()["issue"][0]["diagnostics"]
    assert client.get(f"{BASE}/Patient", params={"birthdate": "soon"}, headers=h
                      ).status_code == 400


def test_invalid_resources_are_refused(client: TestClient) -> None:
    h = auth(client, "clinician")
    cases = [
        (b"{not json", 400),
        (b'{"resourceType": "Observation", "status": "final"}', 400),  # wrong type for URL
        (b'{"resourceType": "Patient", "gender": "robot"}', 422),
        (b'{"resourceType": "Patient", "birthDate": "yesterday"}', 422),
        (b'{"resourceType": "Patient", "shoeSize": 9}', 422),
    ]
    for body, status in cases:
        response = client.post(f"{BASE}/Patient", content=body,
                               headers={**h, "Content-Type": "application/fhir+json"})
        assert response.status_code == status, (body, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["diagnostics"]
    assert client.get(f"{BASE}/Patient", params={"_count": 100}, headers=h).json()["total"] == 0
    unknown = client.get(f"{BASE}/Medication/1", headers=h)
    assert unknown.status_code == 404 and "Patient, ImagingStudy, Observation" in unknown.text


def test_imaging_study_and_observation_linked_to_patient(client: TestClient) -> None:
    h = auth(client, "admin")
    pid = client.post(f"{BASE}/Patient", json=patient("L1"), headers=h).json()["id"]
    study = {"resourceType": "ImagingStudy", "status": "available",
             "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4"}],
             "subject": {"reference": f"Patient/{pid}"}, "numberOfSeries": 4}
    sid = client.post(f"{BASE}/ImagingStudy", json=study, headers=h).json()["id"]
    obs = {"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": "http://snomed.info/sct", "code": "118565006",
                                "display": "Volume"}]},
           "subject": {"reference": f"Patient/{pid}"},
           "partOf": [{"reference": f"ImagingStudy/{sid}"}],
           "valueQuantity": {"value": 12.5, "unit": "mL", "system": "http://unitsofmeasure.org",
                             "code": "mL"}}
    assert client.post(f"{BASE}/Observation", json=obs, headers=h).status_code == 201
    by_subject = client.get(f"{BASE}/ImagingStudy", params={"subject": f"Patient/{pid}"},
                            headers=h).json()
    assert by_subject["total"] == 1 and by_subject["entry"][0]["resource"]["id"] == sid
    assert client.get(f"{BASE}/Observation", params={"patient": pid}, headers=h
                      ).json()["total"] == 1
    assert client.get(f"{BASE}/Observation", params={"code": "http://snomed.info/sct|118565006"},
                      headers=h).json()["total"] == 1
    bad_status = client.post(f"{BASE}/ImagingStudy", json={**study, "status": "done"}, headers=h)
    assert bad_status.status_code == 422


def test_capability_statement(client: TestClient) -> None:
    response = client.get(f"{BASE}/metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    types = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(types) == {"Patient", "ImagingStudy", "Observation"}
    params = {p["name"] for p in types["Patient"]["searchParam"]}
    assert {"identifier", "name", "family", "birthdate", "gender"} <= params
    assert types["Patient"]["conditionalCreate"] is True


def audit(settings: Settings, reason: str) -> list[AuditRecord]:
    with session_factory(settings.sqlalchemy_url)() as session:
        return list(session.scalars(select(AuditRecord).where(AuditRecord.reason == reason)
                                    .order_by(AuditRecord.id)))


def test_roles_and_audit(client: TestClient, settings: Settings) -> None:
    admin = auth(client, "admin")
    pid = client.post(f"{BASE}/Patient", json=patient("R1"), headers=admin).json()["id"]
    study = {"resourceType": "ImagingStudy", "status": "available",
             "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.9"}],
             "subject": {"reference": f"Patient/{pid}"}}
    sid = client.post(f"{BASE}/ImagingStudy", json=study, headers=admin).json()["id"]

    scientist = auth(client, "scientist")
    denied = client.get(f"{BASE}/Patient/{pid}", headers=scientist)
    assert denied.status_code == 403 and denied.json()["issue"][0]["code"] == "forbidden"
    assert client.get(f"{BASE}/Patient", headers=scientist).status_code == 403
    assert client.get(f"{BASE}/ImagingStudy/{sid}", headers=scientist).status_code == 200
    assert client.post(f"{BASE}/ImagingStudy", json=study, headers=scientist).status_code == 403
    owner = auth(client, "owner")
    assert client.get(f"{BASE}/ImagingStudy/{sid}", headers=owner).status_code == 403
    nobody = client.get(f"{BASE}/Patient/{pid}")
    assert nobody.status_code == 401 and nobody.json()["resourceType"] == "OperationOutcome"

    clinician = auth(client, "clinician")
    assert client.get(f"{BASE}/Patient/{pid}", headers=clinician).status_code == 200
    reads = audit(settings, "fhir_read")
    assert [(r.username, r.detail) for r in reads] == [
        ("scientist", f"ImagingStudy/{sid}"), ("clinician", f"Patient/{pid}")]
    assert reads[0].study == "1.2.3.9" and reads[0].decision == "allow"
    denials = [r for r in audit(settings, "role") if r.path.startswith(BASE)]
    assert {r.username for r in denials} == {"scientist", "owner"} and len(denials) == 4
