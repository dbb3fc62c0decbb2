"""/fhir/R4 through nginx on the running platform: bearer tokens, roles, audit rows joined
to nginx's request id, and nginx's own checks in front of the facade."""

from __future__ import annotations

import pytest
import requests

from conftest import RunningPlatform

pytestmark = pytest.mark.e2e


def test_fhir_through_nginx_is_authenticated_and_audited(platform: RunningPlatform) -> None:
    base = f"{platform.url}/fhir/R4"
    metadata = requests.get(f"{base}/metadata", timeout=10)
    assert metadata.status_code == 200
    assert metadata.json()["resourceType"] == "CapabilityStatement"
    assert metadata.headers["X-Content-Type-Options"] == "nosniff"

    clinician = {"Authorization": f"Bearer {platform.login('clinician')}"}
    patient = {"resourceType": "Patient", "gender": "female",
               "identifier": [{"system": "urn:neuronova:patient-id", "value": "E2E-FHIR-1"}]}
    created = requests.post(f"{base}/Patient", json=patient, headers=clinician, timeout=10)
    assert created.status_code == 201, created.text
    # Links and Location name the public address, not the API's loopback port.
    assert created.headers["Location"].startswith(f"{platform.settings.public_url}/fhir/R4/")
    pid = created.json()["id"]

    read = requests.get(f"{base}/Patient/{pid}", headers=clinician, timeout=10)
    assert read.status_code == 200
    row = platform.wait_for_audit(read.headers["X-Request-ID"], service="api")
    assert (row["reason"], row["username"], row["detail"]) == (
        "fhir_read", "clinician", f"Patient/{pid}")

    scientist = {"Authorization": f"Bearer {platform.login('scientist')}"}
    denied = requests.get(f"{base}/Patient/{pid}", headers=scientist, timeout=10)
    assert denied.status_code == 403 and denied.json()["resourceType"] == "OperationOutcome"
    assert platform.wait_for_audit(denied.headers["X-Request-ID"], service="api")[
        "decision"] == "deny"
    assert requests.get(f"{base}/Patient/{pid}", timeout=10).status_code == 401
    # Encoded traversal that stays under /fhir/R4/ after nginx merges it: refused there.
    traversal = requests.get(f"{base}/Patient/%2e%2e/ImagingStudy", headers=clinician,
                             timeout=10)
    assert traversal.status_code == 400


def test_fhir_takes_the_browser_session_with_the_same_rules(platform: RunningPlatform) -> None:
    """A clinician signed in through /login reads and writes /fhir/R4 with the session cookie
    alone; a cross-site write is refused; a scientist's session may not read a Patient; a
    forged cookie counts for nothing."""
    from test_signin_e2e import browser_session

    base = f"{platform.url}/fhir/R4"
    web = browser_session(platform, "clinician", next_path="/")
    patient = {"resourceType": "Patient", "gender": "male",
               "identifier": [{"system": "urn:neuronova:patient-id", "value": "E2E-FHIR-2"}]}
    created = web.post(f"{base}/Patient", json=patient, timeout=10,
                       headers={"Origin": platform.url, "Sec-Fetch-Site": "same-origin"})
    assert created.status_code == 201, created.text
    read = web.get(f"{base}/Patient/{created.json()['id']}", timeout=10)
    assert read.status_code == 200
    row = platform.wait_for_audit(read.headers["X-Request-ID"], service="api")
    assert (row["reason"], row["username"]) == ("fhir_read", "clinician")
    forged = web.post(f"{base}/Patient", json=patient, timeout=10,
                      headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert forged.status_code == 403 and forged.json()["resourceType"] == "OperationOutcome"
    cookie = web.cookies.get("neuronova_session")
    scientist = browser_session(platform, "scientist", next_path="/")
    assert scientist.get(f"{base}/Patient/{created.json()['id']}",
                         timeout=10).status_code == 403
    ended = requests.get(f"{base}/Patient/{created.json()['id']}", timeout=10,
                         cookies={"neuronova_session": cookie + "x"})
    assert ended.status_code == 401
