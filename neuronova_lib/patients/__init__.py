"""Patient records: local database cache → FHIR R4 server → OpenEMR, with write-back.

:class:`PatientChain` resolves a DICOM Patient ID in that order; a FHIR hit is cached, an
OpenEMR hit is converted to a FHIR ``Patient``, created on the FHIR server (conditionally,
so concurrent requests make one resource) and cached. A source that is down, slow or
answering garbage is reported as unavailable, never as "not found".

``identifiers``  DICOM Patient ID ↔ FHIR ``Patient.identifier`` ↔ OpenEMR ``pid``/``pubpid``
``errors``  :class:`SourceUnavailable`, :class:`PatientNotFound`
``fhir_client``  a FHIR R4 REST client (httpx) for any server
``openemr``  OpenEMR's Standard REST API client with OAuth2 client credentials
``convert``  an OpenEMR patient record → a validated FHIR R4 Patient
``cache``  the database cache with ages
``chain``  the fallback chain itself

Names are imported on first use (PEP 562): a dashboard kernel reads ``identifiers`` and
``errors`` without loading the chain's database cache and FHIR validation (about 0.6 s).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chain import PatientChain, Resolution, build_chain
    from .errors import PatientNotFound, SourceUnavailable

_WHERE = {"PatientChain": "chain", "Resolution": "chain", "build_chain": "chain",
          "PatientNotFound": "errors", "SourceUnavailable": "errors"}

__all__ = ["PatientChain", "PatientNotFound", "Resolution", "SourceUnavailable", "build_chain"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)
