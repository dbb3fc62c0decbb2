"""How one patient is named in each system, and the checks on a Patient ID.

==========================  =====================================================
DICOM                       Patient ID (0010,0020), e.g. ``NNDEMO-20261128-001``
FHIR ``Patient.identifier``  ``{system: NEURONOVA_PATIENT_ID_SYSTEM, value: <Patient ID>}``
                            (type MR), plus ``{system: OPENEMR_PID_SYSTEM, value: <pid>}``
                            and ``{system: OPENEMR_UUID_SYSTEM, value: <uuid>}`` when the
                            patient came from OpenEMR
OpenEMR                     ``pubpid`` (the chart's "External ID") = the Patient ID;
                            ``pid`` its internal number; ``uuid`` its API id
==========================  =====================================================

The Patient ID is the join key everywhere: the modality writes it into every image, the
hospital registers it as ``pubpid``, the FHIR server finds it by identifier.
"""

from __future__ import annotations

import re
from typing import Any

#: FHIR identifier systems of OpenEMR's own numbers (local to one OpenEMR installation).
OPENEMR_PID_SYSTEM = "urn:neuronova:openemr:pid"
OPENEMR_UUID_SYSTEM = "urn:neuronova:openemr:uuid"
#: DICOM LO: at most 64 characters, no backslash, no control characters.
_PATIENT_ID = re.compile(r"[^\\\x00-\x1f\x7f]{1,64}")


def check_patient_id(patient_id: str) -> str:
    """The Patient ID without surrounding spaces, or :class:`ValueError` saying why not."""
    value = patient_id.strip()
    if not _PATIENT_ID.fullmatch(value):
        raise ValueError(f"{patient_id!r} is not a DICOM Patient ID: 1 to 64 characters, "
                         "no backslash or control characters")
    return value


def patient_identifier(system: str, patient_id: str) -> dict[str, Any]:
    """The FHIR identifier that carries the DICOM Patient ID."""
    return {"use": "usual", "system": system, "value": patient_id,
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                 "code": "MR"}]}}


def patient_id_of(resource: dict[str, Any], system: str) -> str | None:
    """The DICOM Patient ID a FHIR Patient carries under ``system``."""
    for identifier in resource.get("identifier", []):
        if identifier.get("system") == system and identifier.get("value"):
            return str(identifier["value"])
    return None


def dicom_name(resource: dict[str, Any]) -> str:
    """The Patient's Name as DICOM PN (``FAMILY^GIVEN``), for worklists beside DICOM tags."""
    for name in resource.get("name", []):
        family, given = name.get("family", ""), " ".join(name.get("given", []))
        if family or given:
            return f"{family}^{given}" if given else family
    return ""
