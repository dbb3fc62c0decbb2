"""The study viewer's patient panel, its data: who the patient is, as a clinician reads it.

The record comes from the platform's patient-records chain (local cache → FHIR server →
OpenEMR, :mod:`neuronova_lib.patients`) through ``GET /api/patients/{Patient ID}``
(:meth:`~neuronova_lib.dicomweb.client.Client.patient`), read as the signed-in user. The
API answers with a FHIR R4 Patient, where it came from, how old it is and which sources
could not answer; this module turns that into words (names, labels, "updated 3 minutes
ago") and nothing else, so that it is tested without widgets (:mod:`.patient_view` draws
it).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from ..patients.identifiers import OPENEMR_PID_SYSTEM, OPENEMR_UUID_SYSTEM
from .worklist import person_name

#: Where an answer was read, in words (the API's ``source`` and ``asked`` values).
SOURCES = {"cache": "local cache", "fhir": "FHIR server", "openemr": "OpenEMR"}
#: Why a source could not answer (the kind before the colon in ``unavailable``), in words.
UNAVAILABLE = {"down": "not reachable", "timeout": "too slow to answer",
               "refused": "refused the platform's access", "error": "failed on its side",
               "garbage": "sent an answer that could not be read"}
#: FHIR ``Patient.gender`` in words.
SEXES = {"male": "Male", "female": "Female", "other": "Other", "unknown": "Unknown"}
#: Identifier systems a clinician knows by name.
SYSTEM_LABELS = {
    OPENEMR_PID_SYSTEM: "OpenEMR chart number",
    OPENEMR_UUID_SYSTEM: "OpenEMR record ID",
    "http://hl7.org/fhir/sid/us-ssn": "Social Security number",
    "http://hl7.org/fhir/sid/us-medicare": "Medicare number",
    "https://fhir.nhs.uk/Id/nhs-number": "NHS number",
}
#: HL7 v2 table 0203 identifier types (``Identifier.type``) in words.
TYPE_LABELS = {"MR": "Hospital MRN", "SS": "Social Security number", "DL": "Driver's licence",
               "PPN": "Passport number", "PI": "Patient internal ID",
               "PT": "Patient external ID", "AN": "Account number", "MB": "Member number",
               "NI": "National ID", "NH": "National health number"}
ACCESS_TEXT = ("Patient records are for clinicians: your role does not include them. "
               "The images and the AI results stay available to you.")
NO_PATIENT_ID_TEXT = ("This study carries no patient ID, so no patient record can be "
                      "looked up for it.")


@dataclass(frozen=True)
class Identifier:
    """One of the patient's identifiers: what it is called, its value, and whether it is
    the Patient ID the images carry (the key that joins the record to the study)."""

    label: str
    value: str
    on_images: bool = False


@dataclass(frozen=True)
class PatientRecord:
    """The panel's content, every field already in words."""

    patient_id: str
    name: str
    birth_date: str
    sex: str
    age: str
    deceased: str
    identifiers: tuple[Identifier, ...]
    source: str
    updated: str
    stale: bool
    unavailable: tuple[str, ...]


def source_name(source: str) -> str:
    """``"fhir"`` → ``"FHIR server"``."""
    return SOURCES.get(source, source)


def unavailable_text(source: str, why: str) -> str:
    """``("fhir", "down: GET http://…: connection refused")`` → ``"FHIR server (not
    reachable)"``: the source and the kind of failure, without the technical detail."""
    kind = why.split(":", 1)[0].strip()
    return f"{source_name(source)} ({UNAVAILABLE.get(kind, 'did not answer')})"


def updated_text(age_seconds: float) -> str:
    """How old an answer is: ``updated just now``, ``updated 3 minutes ago``, ..."""
    seconds = max(0.0, float(age_seconds))
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = int(seconds // size)
            return f"updated {count} {unit}{'s' if count != 1 else ''} ago"
    return "updated just now"


def years_between(born: dt.date, on: dt.date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def _full_date(value: str) -> dt.date | None:
    """A FHIR date or dateTime's day, only when it names a whole day (not ``1970-03``)."""
    match = re.match(r"(\d{4})-(\d{2})-(\d{2})", value or "")
    if not match:
        return None
    try:
        return dt.date(*(int(g) for g in match.groups()))
    except ValueError:
        return None


def age_text(birth_date: str, today: dt.date, died: str = "") -> str:
    """``"42 years"`` (at death when ``died`` is a date); ``""`` when the birth date is not
    a whole day (FHIR allows ``1970`` or ``1970-03``) or lies in the future."""
    born = _full_date(birth_date)
    on = _full_date(died) or today
    if born is None or born > on:
        return ""
    years = years_between(born, on)
    if years >= 2:
        return f"{years} years"
    months = (on.year - born.year) * 12 + on.month - born.month - (on.day < born.day)
    return f"{months} month{'s' if months != 1 else ''}"


def identifier_label(identifier: dict[str, Any]) -> str:
    """What a clinician calls an identifier: its type's own text, a known system, its
    HL7 type, else "Other identifier"."""
    kind = identifier.get("type") or {}
    if kind.get("text"):
        return str(kind["text"])
    system = str(identifier.get("system") or "")
    if system in SYSTEM_LABELS:
        return SYSTEM_LABELS[system]
    for coding in kind.get("coding") or []:
        if coding.get("code") in TYPE_LABELS:
            return TYPE_LABELS[coding["code"]]
    return "Other identifier"


def identifiers_of(patient: dict[str, Any], patient_id: str) -> tuple[Identifier, ...]:
    """The Patient's identifiers in words, the one the images carry first."""
    found = [Identifier(identifier_label(i), str(i["value"]), str(i["value"]) == patient_id)
             for i in patient.get("identifier") or [] if i.get("value")]
    return tuple(sorted(found, key=lambda i: not i.on_images))


def name_of(patient: dict[str, Any], dicom_name: str = "") -> str:
    """``FAMILY, Given`` as the worklist writes it: the official name, else the first."""
    names = patient.get("name") or []
    chosen = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    if chosen.get("family") or chosen.get("given"):
        pn = "^".join([chosen.get("family", ""), " ".join(chosen.get("given") or [])])
        return person_name(pn)
    if chosen.get("text"):
        return str(chosen["text"])
    return person_name(dicom_name) if dicom_name else "(no name on record)"


def record_of(answer: dict[str, Any], patient_id: str, today: dt.date | None = None
              ) -> PatientRecord:
    """The API's answer (``GET /api/patients/{id}``) as the panel shows it."""
    patient = answer.get("patient") or {}
    today = today or dt.date.today()
    birth = str(patient.get("birthDate") or "")
    died = str(patient.get("deceasedDateTime") or "")
    deceased = ""
    if died:
        deceased = f"Deceased {died[:10]}"
    elif patient.get("deceasedBoolean"):
        deceased = "Deceased"
    return PatientRecord(
        patient_id=patient_id,
        name=name_of(patient, str(answer.get("name") or "")),
        birth_date=birth,
        sex=SEXES.get(str(patient.get("gender") or ""), "Not recorded"),
        age=age_text(birth, today, died),
        deceased=deceased,
        identifiers=identifiers_of(patient, patient_id),
        source=source_name(str(answer.get("source", ""))),
        updated=updated_text(float(answer.get("age_seconds") or 0.0)),
        stale=bool(answer.get("stale")),
        unavailable=tuple(unavailable_text(s, w)
                          for s, w in (answer.get("unavailable") or {}).items()),
    )


def missing_text(patient_id: str, asked: list[str], unavailable: dict[str, str]) -> str:
    """The calm message for a patient no source has: where it was looked for, and which
    sources could not be asked (then the record may still exist)."""
    answered = [source_name(s) for s in asked if s not in unavailable]
    text = f"No record for patient ID {patient_id} in: {', '.join(answered) or 'any source'}."
    if unavailable:
        down = ", ".join(unavailable_text(s, w) for s, w in unavailable.items())
        text += (f" Not answering now: {down}; the record may be there, so try again in a "
                 "moment.")
    return text


def study_patient_id(client: Any, study_uid: str) -> str:
    """The study's Patient ID (one QIDO-RS study match, as the user), ``""`` if none."""
    found = client.find_studies(study_uid=study_uid, limit=1)
    return found[0].patient_id.strip() if found else ""
