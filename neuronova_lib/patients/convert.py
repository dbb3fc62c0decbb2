"""An OpenEMR Standard API patient record → a FHIR R4 ``Patient``, validated.

OpenEMR sends every field as a string, empty strings for "unknown" and ``sex`` as
``Male``/``Female`` (or whatever a site's list holds): empty fields are left out, ``sex``
maps to ``gender`` (anything else is ``unknown``), and the result is validated with
``fhir.resources`` like any resource the facade stores. A record that cannot make a
valid Patient (no ``pubpid``, a malformed ``DOB``) is refused with the reason.
"""

from __future__ import annotations

from typing import Any

from ..fhir.outcome import FhirError
from ..fhir.validation import validate_resource
from .identifiers import OPENEMR_PID_SYSTEM, OPENEMR_UUID_SYSTEM, patient_identifier

_GENDER = {"male": "male", "m": "male", "female": "female", "f": "female"}


class BadRecord(ValueError):
    """The record cannot become a valid FHIR Patient; the message says which field."""


def openemr_to_fhir(record: dict[str, Any], id_system: str) -> dict[str, Any]:
    """Convert one record; raises :class:`BadRecord` when it is not a usable patient."""
    def text(field: str) -> str:
        value = record.get(field)
        return value.strip() if isinstance(value, str) else ("" if value is None else str(value))

    pubpid = text("pubpid")
    if not pubpid:
        raise BadRecord(f"OpenEMR patient pid={text('pid')!r} has no pubpid (External ID), "
                        "so no DICOM Patient ID to match")
    identifiers = [patient_identifier(id_system, pubpid)]
    if text("pid"):
        identifiers.append({"system": OPENEMR_PID_SYSTEM, "value": text("pid")})
    if text("uuid"):
        identifiers.append({"system": OPENEMR_UUID_SYSTEM, "value": text("uuid")})
    name: dict[str, Any] = {"use": "official"}
    if text("lname"):
        name["family"] = text("lname")
    given = [v for v in (text("fname"), text("mname")) if v]
    if given:
        name["given"] = given
    if text("title"):
        name["prefix"] = [text("title")]
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers,
                               "active": True}
    if len(name) > 1:
        patient["name"] = [name]
    patient["gender"] = _GENDER.get(text("sex").lower(), "unknown")
    if text("DOB"):
        patient["birthDate"] = text("DOB")
    telecom = [{"system": "phone", "value": text(f), "use": use}
               for f, use in (("phone_home", "home"), ("phone_cell", "mobile"),
                              ("phone_biz", "work")) if text(f)]
    if text("email"):
        telecom.append({"system": "email", "value": text("email")})
    if telecom:
        patient["telecom"] = telecom
    address = {k: v for k, v in (("city", text("city")), ("state", text("state")),
                                 ("postalCode", text("postal_code")),
                                 ("country", text("country_code"))) if v}
    if text("street"):
        address["line"] = [text("street")]
    if address:
        patient["address"] = [address]
    try:
        return validate_resource("Patient", patient)
    except FhirError as exc:
        raise BadRecord(f"OpenEMR patient pubpid={pubpid!r} does not make a valid FHIR "
                        f"Patient: {exc.diagnostics}") from None
