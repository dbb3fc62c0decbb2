"""What a resource must be before the facade stores it.

``fhir.resources`` (the R4B models, which match R4 for Patient, ImagingStudy and
Observation) checks structure and datatypes; it does not check codes bound with
``required`` strength (it takes ``gender: "robot"``), so those few are checked here.
Unreadable JSON or a resource of the wrong type is a 400; a resource that parses but
breaks its type's rules is a 422, as the FHIR RESTful API specifies.
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from .outcome import FhirError

#: Codes with a ``required`` binding that fhir.resources leaves unchecked.
_REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("Patient", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("ImagingStudy", "status"): frozenset(
        {"registered", "available", "cancelled", "entered-in-error", "unknown"}),
    ("Observation", "status"): frozenset(
        {"registered", "preliminary", "final", "amended", "corrected", "cancelled",
         "entered-in-error", "unknown"}),
}


def validate_resource(resource_type: str, data: Any) -> dict[str, Any]:
    """The resource as stored (JSON-ready, empty elements dropped), or :class:`FhirError`.

    Parameters
    ----------
    resource_type
        The type named by the URL (``Patient``); the body must say the same.
    data
        The parsed JSON body.

    Raises
    ------
    FhirError
        400 when ``data`` is not a JSON object or names another type; 422 when the
        resource breaks its type's rules (each problem named with its element).
    """
    if not isinstance(data, dict):
        raise FhirError(400, "structure", "the body must be a JSON object (a FHIR resource)")
    named = data.get("resourceType")
    if named != resource_type:
        raise FhirError(400, "invalid",
                        f"the body's resourceType is {named!r}; this URL takes {resource_type}")
    model = get_fhir_model_class(resource_type)
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or resource_type}: {err['msg']}"
            for err in exc.errors()[:10])
        raise FhirError(422, "invalid", f"invalid {resource_type}: {problems}") from None
    clean: dict[str, Any] = parsed.model_dump(mode="json", exclude_none=True, by_alias=True)
    for (rtype, element), allowed in _REQUIRED_CODES.items():
        if rtype == resource_type and element in clean and clean[element] not in allowed:
            raise FhirError(422, "code-invalid",
                            f"invalid {resource_type}.{element} {clean[element]!r}: use one of "
                            f"{', '.join(sorted(allowed))}", [f"{resource_type}.{element}"])
    return clean
