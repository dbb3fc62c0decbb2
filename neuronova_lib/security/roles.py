"""The platform's roles; each route states which of them it admits."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    clinician = "clinician"
    scientist = "scientist"
    model_owner = "model_owner"
    admin = "admin"


#: Roles that may read images (QIDO-RS, WADO-RS).
IMAGE_READERS = frozenset({Role.clinician, Role.scientist, Role.model_owner, Role.admin})
#: Roles that may request an AI analysis (``POST /api/inference``); the dashboards ask it
#: to say why a button is off rather than to show a refusal.
INFERENCE_REQUESTERS = frozenset({Role.clinician, Role.scientist, Role.admin})
#: Roles that may write images (STOW-RS, uploads): always through the ingest gate.
IMAGE_WRITERS = frozenset({Role.admin})
