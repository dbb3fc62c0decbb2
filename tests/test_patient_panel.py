"""The study viewer's patient panel without a stack: the API's answer in words (names,
identifier labels, ages, sources) and the banner's HTML. In a browser on the real stack:
test_dashboards_patient_e2e.py."""

from __future__ import annotations

import datetime as dt

import pytest

from neuronova_lib.dashboards.patient import (
    age_text,
    identifier_label,
    missing_text,
    record_of,
    unavailable_text,
    updated_text,
)
from neuronova_lib.dashboards.patient_view import record_html
from neuronova_lib.demo.openemr_server import load_records
from neuronova_lib.patients.convert import openemr_to_fhir
from neuronova_lib.patients.identifiers import dicom_name

SYSTEM = "urn:neuronova:patient-id"
TODAY = dt.date(2026, 12, 7)


def demo_answer(source: str = "openemr", age: float = 0.0, stale: bool = False,
                unavailable: dict[str, str] | None = None) -> tuple[dict, str]:
    """What GET /api/patients/{id} answers for the first demo patient (converted from the
    recorded OpenEMR record by the chain's own converter)."""
    record = load_records()[0]
    patient = openemr_to_fhir(record, SYSTEM)
    return ({"patient_id": record["pubpid"], "name": dicom_name(patient), "source": source,
             "age_seconds": age, "stale": stale, "on_fhir": True,
             "asked": ["cache", "fhir", "openemr"], "unavailable": unavailable or {},
             "patient": patient}, record["pubpid"])


def test_a_demo_patient_reads_as_a_clinician_would() -> None:
    answer, pid = demo_answer()
    record = record_of(answer, pid, TODAY)
    assert (record.name, record.birth_date, record.sex, record.age) == (
        "Demo, Case001", "1983-11-16", "Female", "43 years")
    labels = [(i.label, i.value, i.on_images) for i in record.identifiers]
    assert labels[0] == ("Hospital MRN", pid, True)
    assert [label for label, _, _ in labels[1:]] == ["OpenEMR chart number", "OpenEMR record ID"]
    assert (record.source, record.updated, record.stale, record.unavailable) == (
        "OpenEMR", "updated just now", False, ())


@pytest.mark.parametrize("seconds, text", [
    (0, "updated just now"), (59.9, "updated just now"), (60, "updated 1 minute ago"),
    (185, "updated 3 minutes ago"), (7300, "updated 2 hours ago"),
    (86400 * 3 + 5, "updated 3 days ago"), (-4, "updated just now")])
def test_the_age_of_an_answer(seconds: float, text: str) -> None:
    assert updated_text(seconds) == text


@pytest.mark.parametrize("born, died, text", [
    ("1983-11-16", "", "43 years"), ("1983-12-08", "", "42 years"), ("2026-03-01", "", "9 months"),
    ("2025-12-07", "", "12 months"), ("2024-12-07", "", "2 years"),
    ("1970", "", ""), ("1970-03", "", ""), ("2030-01-01", "", ""), ("", "", ""),
    ("1940-05-01", "2001-04-30T10:00:00Z", "60 years")])
def test_the_patients_age_where_the_birth_date_says_it(born: str, died: str, text: str) -> None:
    assert age_text(born, TODAY, died) == text


@pytest.mark.parametrize("identifier, label", [
    ({"system": "urn:x", "value": "1", "type": {"text": "Clinic number"}}, "Clinic number"),
    ({"system": "http://hl7.org/fhir/sid/us-ssn", "value": "1"}, "Social Security number"),
    ({"system": "https://hospital.example/mrn", "value": "1",
      "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                           "code": "MR"}]}}, "Hospital MRN"),
    ({"system": "urn:neuronova:openemr:pid", "value": "7"}, "OpenEMR chart number"),
    ({"system": "urn:oid:1.2.3", "value": "1"}, "Other identifier")])
def test_identifier_labels(identifier: dict, label: str) -> None:
    assert identifier_label(identifier) == label


def test_sources_that_could_not_answer_are_said_in_words() -> None:
    assert unavailable_text("fhir", "down: GET http://127.0.0.1:1/fhir/R4/Patient: [Errno 111]"
                            ) == "FHIR server (not reachable)"
    assert unavailable_text("openemr", "garbage: not JSON") == (
        "OpenEMR (sent an answer that could not be read)")
    assert unavailable_text("openemr", "odd") == "OpenEMR (did not answer)"
    assert missing_text("NNDEMO-41-001", ["cache", "fhir", "openemr"], {}) == (
        "No record for patient ID NNDEMO-41-001 in: local cache, FHIR server, OpenEMR.")
    text = missing_text("P1", ["cache", "fhir", "openemr"], {"fhir": "timeout: took long"})
    assert text.startswith("No record for patient ID P1 in: local cache, OpenEMR. ")
    assert "FHIR server (too slow to answer)" in text and "try again" in text


def test_the_banner_flags_stale_and_says_what_did_not_answer() -> None:
    answer, pid = demo_answer("cache", age=2 * 86400, stale=True,
                              unavailable={"fhir": "down: connection refused",
                                           "openemr": "timeout: slow"})
    page = record_html(record_of(answer, pid, TODAY))
    assert "Patient record from <b>local cache</b>, updated 2 days ago" in page
    assert 'class="nn-stale"' in page and ">stale</span>" in page
    assert ("Not answering now: FHIR server (not reachable), OpenEMR (too slow to answer)."
            in page)
    assert "connection refused" not in page  # the detail is for the logs, not the clinician
    fresh = record_html(record_of(demo_answer("fhir", age=190)[0], pid, TODAY))
    assert "updated 3 minutes ago" in fresh and ">stale<" not in fresh
    assert "Not answering" not in fresh


def test_the_banner_escapes_what_the_record_says() -> None:
    answer, pid = demo_answer()
    answer["patient"]["name"] = [{"family": "<script>x</script>", "given": ["A&B"]}]
    page = record_html(record_of(answer, pid, TODAY))
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;, A&amp;B" in page
