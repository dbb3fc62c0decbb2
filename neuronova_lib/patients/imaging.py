"""A FHIR ``ImagingStudy`` per stored study, linked to its ``Patient`` through the chain.

``neuronova up`` calls :func:`publish_imaging_studies` after loading the demo studies:
each study's Patient ID is resolved by the chain (so the demo patients come from the
recorded OpenEMR into the FHIR server and the cache), then an ImagingStudy identified by
``urn:dicom:uid`` / ``urn:oid:<StudyInstanceUID>`` is created on the FHIR server unless
one exists (``If-None-Exist``): running it again adds nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import httpx

from ..fhir.validation import validate_resource
from .chain import PatientChain
from .errors import PatientNotFound, SourceUnavailable

log = logging.getLogger(__name__)
DICOM_UID_SYSTEM = "urn:dicom:uid"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"


def _started(tags: dict[str, str]) -> str | None:
    """The study date as a FHIR dateTime: the date alone, since a FHIR time needs a zone
    and DICOM's StudyTime has none (TimezoneOffsetFromUTC is rarely sent)."""
    try:
        return datetime.strptime(tags.get("StudyDate", ""), "%Y%m%d").date().isoformat()
    except ValueError:
        return None


def imaging_study_resource(study: dict[str, Any], series: list[dict[str, Any]],
                           patient_ref: str) -> dict[str, Any]:
    """The ImagingStudy for one Orthanc study (``/studies/{id}`` and its series' JSON)."""
    tags = study.get("MainDicomTags", {})
    uid = tags["StudyInstanceUID"]
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy", "status": "available",
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}],
        "subject": {"reference": patient_ref},
        "numberOfSeries": len(series),
        "numberOfInstances": sum(len(s.get("Instances", [])) for s in series),
    }
    if tags.get("AccessionNumber"):
        resource["identifier"].append({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                 "code": "ACSN"}]},
            "value": tags["AccessionNumber"]})
    if _started(tags):
        resource["started"] = _started(tags)
    if tags.get("StudyDescription"):
        resource["description"] = tags["StudyDescription"]
    modalities = sorted({s.get("MainDicomTags", {}).get("Modality", "") for s in series} - {""})
    resource["modality"] = [{"system": _DCM, "code": m} for m in modalities]
    resource["series"] = [{
        "uid": s["MainDicomTags"]["SeriesInstanceUID"],
        **({"number": int(s["MainDicomTags"]["SeriesNumber"])}
           if str(s["MainDicomTags"].get("SeriesNumber", "")).isdigit() else {}),
        "modality": {"system": _DCM, "code": s["MainDicomTags"].get("Modality") or "OT"},
        **({"description": s["MainDicomTags"]["SeriesDescription"]}
           if s["MainDicomTags"].get("SeriesDescription") else {}),
        "numberOfInstances": len(s.get("Instances", [])),
    } for s in series]
    return validate_resource("ImagingStudy", resource)


def publish_imaging_studies(store: Any, chain: PatientChain,
                            auth: httpx.Auth | None = None) -> dict[str, int]:
    """Make sure every study in Orthanc has its ImagingStudy on the chain's FHIR server.

    Returns counts: ``studies``, ``published`` (new or already there), ``no_patient``
    (the chain found no patient for the study's Patient ID) and ``failed``.
    """
    if chain.fhir is None:
        raise ValueError("the chain has no FHIR server to publish ImagingStudy resources to")
    counts = {"studies": 0, "published": 0, "no_patient": 0, "failed": 0}
    for orthanc_id in store.study_ids():
        counts["studies"] += 1
        study = store.get_json(f"/studies/{orthanc_id}")
        patient_id = study.get("PatientMainDicomTags", {}).get("PatientID", "")
        try:
            patient = chain.resolve(patient_id, auth).patient
        except (PatientNotFound, ValueError) as exc:
            log.warning("study %s: no patient record for Patient ID %r: %s",
                        study["MainDicomTags"].get("StudyInstanceUID"), patient_id, exc)
            counts["no_patient"] += 1
            continue
        if "id" not in patient:  # cached from OpenEMR while FHIR was down
            counts["failed"] += 1
            continue
        series = store.get_json(f"/studies/{orthanc_id}/series")
        resource = imaging_study_resource(study, series, f"Patient/{patient['id']}")
        try:
            chain.fhir.create_if_none(resource, DICOM_UID_SYSTEM,
                                      resource["identifier"][0]["value"], auth)
            counts["published"] += 1
        except SourceUnavailable as exc:
            log.warning("ImagingStudy for %s not published: %s", patient_id, exc)
            counts["failed"] += 1
    return counts
