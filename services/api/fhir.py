"""The platform's FHIR R4 facade at ``/fhir/R4`` (nginx forwards the path unchanged).

Patient, ImagingStudy and Observation, stored by :class:`neuronova_lib.fhir.FhirStore`:
read, vread, create (conditional with ``If-None-Exist``), update (``If-Match``), search
with ``_count``/``_offset`` paging into ``searchset`` Bundles, ``/metadata``. Every error
is an ``OperationOutcome``, the platform's own refusals (401, 403) included.

Who may do what (roles from the database, as for every API route):

========================  ==========================  ===================
resource                  read and search             create and update
========================  ==========================  ===================
Patient                   clinician, admin            clinician, admin
ImagingStudy, Observation clinician, admin, scientist clinician, admin
========================  ==========================  ===================

Scientists see imaging and measurements, not names and birth dates. Every read and
search is audited like an image read (reason ``fhir_read`` / ``fhir_search``; an
ImagingStudy's row names its Study Instance UID); every refusal is audited too.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from neuronova_lib.db.browser_sessions import COOKIE_NAME
from neuronova_lib.db.models import User
from neuronova_lib.db.users import get_user
from neuronova_lib.fhir import FhirError, FhirStore, operation_outcome
from neuronova_lib.fhir.capability import capability_statement
from neuronova_lib.fhir.store import check_type, etag
from neuronova_lib.security.roles import Role

from .auditing import write_audit
from .routes.auth_check import browser_session
from .deps import (SessionDep, SettingsDep, TokenServiceDep, get_access_claims,
                   get_current_user, oauth2_scheme)

PREFIX = "/fhir/R4"
FHIR_JSON = "application/fhir+json"
router = APIRouter(prefix=PREFIX, tags=["fhir"])

_WRITERS = frozenset({Role.clinician, Role.admin})
_READERS = {
    "Patient": frozenset({Role.clinician, Role.admin}),
    "ImagingStudy": frozenset({Role.clinician, Role.admin, Role.scientist}),
    "Observation": frozenset({Role.clinician, Role.admin, Role.scientist}),
}
_DEFAULT_COUNT = 20


def get_fhir_user(request: Request, db: SessionDep, settings: SettingsDep,
                  tokens: TokenServiceDep,
                  token: Annotated[str | None, Depends(oauth2_scheme)]) -> User:
    """Who is asking: a bearer token's user (the API's own verification: signature,
    revocation, account active, role from the database), or, without one, the browser
    session of the platform's sign-in (its cookie, checked here as nginx's ``auth_request``
    checks it, with the same cross-site rule for writes). Both end at the user's row."""
    cookie = request.cookies.get(COOKIE_NAME)
    if token or not cookie:
        return get_current_user(request, db, get_access_claims(request, db, token, tokens))
    found, refusal = browser_session(db, request, settings, cookie, request.method)
    if refusal is not None:
        write_audit(db, request, decision="deny", status=refusal.status,
                    reason=refusal.reason, detail=refusal.detail,
                    username=found and found.username)
        db.commit()
        raise FhirError(refusal.status, "login" if refusal.status == 401 else "forbidden",
                        refusal.detail)
    db.commit()  # last_seen, when it was due
    assert found is not None
    user = get_user(db, found.username)
    if user is None or not user.is_active:
        raise FhirError(401, "login", f"account {found.username!r} cannot sign in; sign in "
                                      "again")
    return user


FhirUser = Annotated[User, Depends(get_fhir_user)]


def fhir_response(body: dict[str, Any], status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status,
                    media_type=FHIR_JSON, headers=headers)


def base_url(request: Request, settings: Any) -> str:
    """The facade's address as the caller reached it: nginx's public URL behind nginx
    (which sets X-Forwarded-For), else the address the API itself was called on."""
    if request.headers.get("x-forwarded-for"):
        return f"{settings.public_url}{PREFIX}"
    return f"{str(request.base_url).rstrip('/')}{PREFIX}"


def _allow(request: Request, db: Any, user: User, resource_type: str, write: bool) -> None:
    """403 (audited) unless the user's role may read / write this type."""
    check_type(resource_type)
    allowed = _WRITERS if write else _READERS[resource_type]
    if user.role in allowed:
        return
    what = "write" if write else "read"
    detail = (f"{user.role} may not {what} {resource_type}; that needs the role "
              f"{', '.join(sorted(r.value for r in allowed))}")
    write_audit(db, request, decision="deny", status=403, reason="role",
                username=user.username, role=user.role, detail=detail)
    db.commit()
    raise FhirError(403, "forbidden", detail)


def _audit_read(request: Request, db: Any, user: User, reason: str, detail: str,
                study: str | None = None) -> None:
    write_audit(db, request, decision="allow", status=200, reason=reason,
                username=user.username, role=user.role, detail=detail[:2000], study=study)
    db.commit()


def _study_uid(resource: dict[str, Any]) -> str | None:
    for identifier in resource.get("identifier", []):
        if identifier.get("system") == "urn:dicom:uid":
            return str(identifier.get("value", "")).removeprefix("urn:oid:")[:64] or None
    return None


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise FhirError(400, "structure", "the body is not JSON; send a FHIR resource as "
                        "application/fhir+json") from None


@router.get("/metadata")
def metadata(request: Request, settings: SettingsDep) -> Response:
    """The CapabilityStatement (public, as FHIR clients expect)."""
    return fhir_response(capability_statement(base_url(request, settings)))


@router.get("/{resource_type}")
def search(resource_type: str, request: Request, db: SessionDep, settings: SettingsDep,
           user: FhirUser) -> Response:
    """Search one type: ``identifier``, ``name``, ``family``, ``birthdate``, ``gender``,
    ``subject``/``patient`` ... with ``_count`` and ``_offset``; a ``searchset`` Bundle."""
    _allow(request, db, user, resource_type, write=False)
    query = list(request.query_params.multi_items())
    count = _int_param(request, "_count", _DEFAULT_COUNT, settings.fhir_page_max)
    offset = _int_param(request, "_offset", 0, None)
    total, found = FhirStore(db).search(resource_type, query, count, offset)
    base = base_url(request, settings)
    kept = [(k, v) for k, v in query if k not in ("_count", "_offset")]

    def page(at: int) -> str:
        return f"{base}/{resource_type}?{urlencode([*kept, ('_count', count), ('_offset', at)])}"

    links = [{"relation": "self", "url": page(offset)}]
    if count and offset + count < total:
        links.append({"relation": "next", "url": page(offset + count)})
    if offset > 0:
        links.append({"relation": "previous", "url": page(max(0, offset - count))})
    bundle = {
        "resourceType": "Bundle", "type": "searchset", "total": total, "link": links,
        "entry": [{"fullUrl": f"{base}/{resource_type}/{r['id']}", "resource": r,
                   "search": {"mode": "match"}} for r in found],
    }
    _audit_read(request, db, user, "fhir_search",
                f"{resource_type}?{urlencode(query)}: {len(found)} of {total}")
    return fhir_response(bundle)


def _int_param(request: Request, name: str, default: int, cap: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default if cap is None else min(default, cap)
    if not raw.isdigit():
        raise FhirError(400, "invalid", f"{name}={raw!r}: give a whole number")
    return int(raw) if cap is None else min(int(raw), cap)


@router.post("/{resource_type}")
async def create(resource_type: str, request: Request, db: SessionDep, settings: SettingsDep,
                 user: FhirUser) -> Response:
    """Create; with ``If-None-Exist: <search>`` only when nothing matches (200 and the
    match otherwise)."""
    _allow(request, db, user, resource_type, write=True)
    data = await _body(request)
    store = FhirStore(db)
    resource, created = store.create(resource_type, data, request.headers.get("if-none-exist"))
    location = f"{base_url(request, settings)}/{resource_type}/{resource['id']}/_history/" \
               f"{resource['meta']['versionId']}"
    write_audit(db, request, decision="allow", status=201 if created else 200,
                reason="fhir_create" if created else "fhir_create_existing",
                username=user.username, role=user.role,
                detail=f"{resource_type}/{resource['id']}", study=_study_uid(resource))
    db.commit()
    return fhir_response(resource, 201 if created else 200,
                         {"Location": location, "ETag": etag(resource)})


@router.get("/{resource_type}/{resource_id}")
def read(resource_type: str, resource_id: str, request: Request, db: SessionDep,
         user: FhirUser) -> Response:
    _allow(request, db, user, resource_type, write=False)
    resource = FhirStore(db).read(resource_type, resource_id)
    _audit_read(request, db, user, "fhir_read", f"{resource_type}/{resource_id}",
                _study_uid(resource))
    return fhir_response(resource, headers={"ETag": etag(resource)})


@router.get("/{resource_type}/{resource_id}/_history/{version}")
def vread(resource_type: str, resource_id: str, version: str, request: Request,
          db: SessionDep, user: FhirUser) -> Response:
    _allow(request, db, user, resource_type, write=False)
    resource = FhirStore(db).vread(resource_type, resource_id, version)
    _audit_read(request, db, user, "fhir_read",
                f"{resource_type}/{resource_id}/_history/{version}", _study_uid(resource))
    return fhir_response(resource, headers={"ETag": etag(resource)})


@router.put("/{resource_type}/{resource_id}")
async def update(resource_type: str, resource_id: str, request: Request, db: SessionDep,
                 settings: SettingsDep, user: FhirUser) -> Response:
    """Update (a new version), or create with the client's id; ``If-Match`` for safety."""
    _allow(request, db, user, resource_type, write=True)
    data = await _body(request)
    resource, created = FhirStore(db).update(resource_type, resource_id, data,
                                             request.headers.get("if-match"))
    write_audit(db, request, decision="allow", status=201 if created else 200,
                reason="fhir_update", username=user.username, role=user.role,
                detail=f"{resource_type}/{resource_id} v{resource['meta']['versionId']}",
                study=_study_uid(resource))
    db.commit()
    location = f"{base_url(request, settings)}/{resource_type}/{resource_id}/_history/" \
               f"{resource['meta']['versionId']}"
    return fhir_response(resource, 201 if created else 200,
                         {"Location": location, "ETag": etag(resource)})


_ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found",
                405: "not-supported", 409: "conflict", 412: "conflict", 422: "invalid"}


def install(app: FastAPI) -> None:
    """Add the facade's routes to ``app`` and answer errors under ``/fhir/`` as
    OperationOutcomes (other paths keep FastAPI's ``{"detail": ...}``)."""
    app.include_router(router)
    previous_http = app.exception_handlers.get(StarletteHTTPException)
    previous_validation = app.exception_handlers.get(RequestValidationError)

    @app.exception_handler(FhirError)
    async def _fhir_error(request: Request, exc: FhirError) -> Response:
        return fhir_response(exc.outcome(), exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(PREFIX + "/") or request.url.path == PREFIX:
            detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
            return fhir_response(operation_outcome(detail, _ISSUE_CODES.get(exc.status_code,
                                                                            "processing")),
                                 exc.status_code, dict(exc.headers or {}))
        if previous_http is not None:
            return await previous_http(request, exc)  # type: ignore[misc, no-any-return]
        return JSONResponse({"detail": exc.detail}, exc.status_code, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith(PREFIX + "/"):
            return fhir_response(operation_outcome(str(exc.errors())[:1000], "invalid"), 400)
        if previous_validation is not None:
            return await previous_validation(request, exc)  # type: ignore[misc, no-any-return]
        return JSONResponse({"detail": exc.errors()}, 422)
