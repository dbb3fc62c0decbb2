"""The platform's own FHIR R4 server (the facade at ``/fhir/R4``), persisted in the platform
database: Patient, ImagingStudy and Observation, validated with ``fhir.resources``.

It exists because no complete FHIR server installs here (see docs/patients.md); the patient
chain talks to it over HTTP exactly as it would to HAPI, Google or Azure FHIR, so pointing
``NEURONOVA_FHIR_URL`` at one of those changes no code.

``outcome``  OperationOutcome and the :class:`FhirError` every refusal raises
``validation``  what a resource must be before it is stored (400 / 422)
``search``  the searchable values of a resource and the parsing of a search request
``store``  read, vread, create, update, conditional create, search (SQLAlchemy)
``capability``  the CapabilityStatement served at ``/metadata``
"""

from .outcome import FhirError, operation_outcome
from .store import FhirStore, SUPPORTED_TYPES

__all__ = ["FhirError", "FhirStore", "SUPPORTED_TYPES", "operation_outcome"]
