"""The facade's CapabilityStatement (``GET /fhir/R4/metadata``): what it really does."""

from __future__ import annotations

from typing import Any

from .. import __version__
from .search import PARAMETERS

_INTERACTIONS = ["read", "vread", "create", "update", "search-type"]
_TYPE_DOC = {"string": "string", "token": "token", "date": "date", "reference": "reference"}


def capability_statement(base_url: str) -> dict[str, Any]:
    """An R4 CapabilityStatement for the facade at ``base_url``."""
    resources = []
    for rtype, params in PARAMETERS.items():
        resources.append({
            "type": rtype,
            "interaction": [{"code": code} for code in _INTERACTIONS],
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "searchParam": [{"name": "_id", "type": "token"}] + [
                {"name": name, "type": _TYPE_DOC[kind]} for name, kind in sorted(params.items())],
        })
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-07",
        "kind": "instance",
        "software": {"name": "NeuroNova FHIR facade", "version": __version__},
        "implementation": {"description": "NeuroNova's FHIR R4 facade: Patient, ImagingStudy "
                                          "and Observation in the platform database",
                           "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": {"description": "Bearer tokens of the platform (POST /api/auth/token)"
                                        " or its browser session; clinicians and admins read "
                                        "and write, scientists read ImagingStudy and "
                                        "Observation; every read is audited."},
            "resource": resources,
        }],
    }
