"""Pieces of the patient chain that need no server: conversions and identifiers."""

from __future__ import annotations

import pytest

from neuronova_lib.demo.openemr_server import load_records
from neuronova_lib.demo.identity import case_identity
from neuronova_lib.patients.convert import BadRecord, openemr_to_fhir
from neuronova_lib.patients.identifiers import check_patient_id, dicom_name
from neuronova_lib.patients.imaging import imaging_study_resource
from neuronova_lib.stack.platform import DEMO_SEED

SYSTEM = "urn:neuronova:patient-id"


def test_demo_patients_are_in_the_recorded_openemr() -> None:
    by_pubpid = {r["pubpid"]: r for r in load_records()}
    for index in range(1, 11):
        case = case_identity(DEMO_SEED, index)
        record = by_pubpid[case.patient_id]
        assert record["DOB"].replace("-", "") == case.patient_birth_date
        patient = openemr_to_fhir(record, SYSTEM)
        assert dicom_name(patient).upper() == case.patient_name
        assert patient["gender"] == {"F": "female", "M": "male"}[case.patient_sex]


def test_conversion_of_openemr_quirks() -> None:
    records = load_records()
    unnamed = next(r for r in records if not r["pubpid"])
    with pytest.raises(BadRecord, match="no pubpid"):
        openemr_to_fhir(unnamed, SYSTEM)
    odd = {**records[0], "sex": "", "DOB": "", "mname": "Q", "title": "Dr", "email": "a@b.org"}
    patient = openemr_to_fhir(odd, SYSTEM)
    assert patient["gender"] == "unknown" and "birthDate" not in patient
    assert patient["name"][0]["given"][-1] == "Q" and patient["name"][0]["prefix"] == ["Dr"]
    assert {"system": "email", "value": "a@b.org"} in patient["telecom"]
    with pytest.raises(BadRecord, match="birthDate"):
        openemr_to_fhir({**records[0], "DOB": "1970-13-45"}, SYSTEM)


@pytest.mark.parametrize("bad", ["", "x" * 65, "a\\b", "tab\there"])
def test_patient_id_checks(bad: str) -> None:
    with pytest.raises(ValueError):
        check_patient_id(bad)
    assert check_patient_id(" NNDEMO-1 ") == "NNDEMO-1"


def test_imaging_study_from_orthanc_json() -> None:
    study = {"MainDicomTags": {"StudyInstanceUID": "1.2.3", "StudyDate": "20240105",
                               "StudyTime": "101500.123", "AccessionNumber": "NN1",
                               "StudyDescription": "MRI brain"},
             "PatientMainDicomTags": {"PatientID": "P1"}}
    series = [{"MainDicomTags": {"SeriesInstanceUID": f"1.2.3.{n}", "SeriesNumber": str(n),
                                 "Modality": "MR", "SeriesDescription": f"s{n}"},
               "Instances": ["a", "b"]} for n in (1, 2)]
    resource = imaging_study_resource(study, series, "Patient/abc")
    assert resource["identifier"][0] == {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}
    assert resource["started"] == "2024-01-05" and resource["numberOfInstances"] == 4
    assert [s["number"] for s in resource["series"]] == [1, 2]
    assert resource["modality"] == [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                     "code": "MR"}]
