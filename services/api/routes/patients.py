"""Patients (clinicians and admins): the fallback chain cache → FHIR → OpenEMR.

``GET /api/patients/{patient_id}`` resolves a DICOM Patient ID through
:class:`neuronova_lib.patients.PatientChain` and says where the answer came from, how old
it is and which sources could not answer. ``GET /api/patients?query=<name>`` searches by
name. Scientists have no access: they see imaging, not names and birth dates.

With ``NEURONOVA_FHIR_URL`` unset the chain uses the platform's own facade over loopback
(``http://127.0.0.1:<api port>/fhir/R4``) with a one-minute token minted for the user who
asked, so the facade's audit names that user; with it set, the chain sends
``NEURONOVA_FHIR_TOKEN`` (if any) to that server.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse

from neuronova_lib.db.models import User
from neuronova_lib.patients import PatientChain, PatientNotFound, build_chain
from neuronova_lib.patients.fhir_client import BearerAuth
from neuronova_lib.patients.identifiers import dicom_name
from neuronova_lib.security.roles import Role

from ..auditing import write_audit
from ..deps import SessionDep, SettingsDep, require_roles

router = APIRouter(prefix="/patients", tags=["patients"])
PatientReader = Annotated[User, Depends(require_roles(Role.clinician, Role.admin))]
_build_lock = threading.Lock()


def get_chain(request: Request) -> PatientChain:
    """The app's chain, built on first use (its clients pool connections)."""
    state = request.app.state
    with _build_lock:
        chain = getattr(state, "patient_chain", None)
        if chain is None:
            settings = state.settings
            own = f"http://127.0.0.1:{settings.api_port}/fhir/R4"
            chain = state.patient_chain = build_chain(settings, state.sessions, own)
        return chain  # type: ignore[no-any-return]


ChainDep = Annotated[PatientChain, Depends(get_chain)]


def _fhir_auth(request: Request, settings: Any, user: User) -> BearerAuth | None:
    if settings.fhir_url:
        return None  # the chain's own NEURONOVA_FHIR_TOKEN
    tokens = request.app.state.tokens
    return BearerAuth(lambda: tokens.mint(user.username, user.role, "access", 60)[0])


@router.get("/{patient_id:path}")  # a Patient ID may hold a "/" (sent as %2F)
def read_patient(patient_id: str, request: Request, db: SessionDep, settings: SettingsDep,
                 user: PatientReader, chain: ChainDep) -> Any:
    """One patient by DICOM Patient ID: the FHIR R4 Patient and where it came from.

    404 when no source has it; 503 when it was not found but a source that might have it
    could not answer (``unavailable`` says which and why).
    """
    try:
        found = chain.resolve(patient_id, _fhir_auth(request, settings, user))
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from None
    except PatientNotFound as missing:
        code = status.HTTP_503_SERVICE_UNAVAILABLE if missing.unavailable else 404
        write_audit(db, request, decision="allow", status=code, reason="patient_not_found",
                    username=user.username, role=user.role, detail=str(missing)[:2000])
        db.commit()
        return JSONResponse({"detail": str(missing), "asked": missing.asked,
                             "unavailable": missing.unavailable}, code)
    write_audit(db, request, decision="allow", status=200, reason="patient_read",
                username=user.username, role=user.role,
                detail=f"{patient_id} from {found.source}"
                       + (f"; unavailable: {', '.join(found.unavailable)}"
                          if found.unavailable else ""))
    db.commit()
    return {"patient_id": patient_id, "name": dicom_name(found.patient),
            "source": found.source, "age_seconds": round(found.age, 3), "stale": found.stale,
            "on_fhir": found.on_fhir, "asked": found.asked, "unavailable": found.unavailable,
            "patient": found.patient}


@router.get("")
def search_patients(request: Request, db: SessionDep, settings: SettingsDep,
                    user: PatientReader, chain: ChainDep,
                    query: Annotated[str, Query(min_length=1, max_length=64,
                                                description="start of a name")],
                    limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Any:
    """Patients whose name starts with ``query`` (FHIR server, OpenEMR, cache)."""
    patients, asked, unavailable = chain.search(query, limit,
                                                _fhir_auth(request, settings, user))
    write_audit(db, request, decision="allow", status=200, reason="patient_search",
                username=user.username, role=user.role,
                detail=f"query {query!r}: {len(patients)} found")
    db.commit()
    return {"query": query, "asked": asked, "unavailable": unavailable,
            "patients": [{"name": dicom_name(p), "patient": p} for p in patients]}
