"""The guard proxy: nginx's auth delegate for every DICOMweb request.

nginx forwards ``/api/pacs/dicom-web/...`` here without its body (a ``POST``,
STOW-RS, is only authorised here, through ``auth_request``, and then goes to
the API's ingest gate). The guard
answers with no body: either a refusal (status + JSON reason) or ``200`` with
``X-Accel-Redirect`` to nginx's internal Orthanc location, so nginx, not
Python, moves the image bytes. Every decision is audited before it is answered.

Run: ``uvicorn --factory services.proxy.app:create_app``.
"""

import hashlib
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any, AsyncIterator

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Route

from neuronova_lib.config import Settings, get_settings
from neuronova_lib.db.audit import RUN_HEADER, AuditWriter, run_id_header
from neuronova_lib.db.engine import get_engine
from neuronova_lib.frames.access_audit import FrameAccessImporter
from neuronova_lib.nginx_refusals import nginx_refusal
from neuronova_lib.db.revocation import Refused, RevocationWatcher, token_refusal
from neuronova_lib.security.tokens import Claims, token_service

from services.openapi_docs import mount_offline_docs

from .guard import Decision, Guard
from .paths import PREFIX, Refusal, check_uid

log = logging.getLogger(__name__)

_HEADER_LIMIT = 256
#: The request headers the hot path reads (ASGI gives names lower-cased, as bytes).
_HOT_HEADERS = frozenset({b"authorization", b"x-real-ip", b"x-request-id"})
#: The MLflow run of the reader (neuronova_lib sends it), kept in the audit row.
_RUN_HEADER = RUN_HEADER.encode()


def _client(request: Request) -> str | None:
    # nginx sets X-Real-IP; the guard listens on loopback only, so the header is nginx's.
    return request.headers.get("x-real-ip") or (request.client.host if request.client else None)


def _audit_path(raw: str) -> str:
    return raw[:512].encode("unicode_escape").decode("ascii")


def limit_key(claims: Claims) -> bytes:
    """nginx's per-token concurrency key: a digest of the verified token's jti.

    Every spelling of one token gives the same key, and no token material
    reaches nginx's memory.
    """
    return hashlib.blake2b(claims.jti.encode(), digest_size=12).hexdigest().encode()


def decision_ttl(exp: float, bound: float, snapshot_age: float, now: float | None = None) -> int:
    """Whole seconds nginx may keep an allow decision (``X-Accel-Expires``; 0: not at all).

    The decision rests on a revocation snapshot ``snapshot_age`` seconds old, so a
    revocation after it is seen within ``bound - snapshot_age`` by the guard's own
    rule; the token ends at ``exp``. nginx counts validity in whole seconds from the
    second it stored the entry and serves it through the last one, up to one second
    more than asked: one second less is asked.
    """
    now = time.time() if now is None else now
    seconds = min(exp - now, bound - snapshot_age)
    return max(0, int(seconds) - 1)


def _deny_response(decision: Decision) -> Response:
    body = json.dumps({"detail": decision.detail, "reason": decision.reason})
    headers = {"Cache-Control": "no-store"}
    if decision.status == 401:
        headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{decision.reason}"'
    if decision.status == 405:
        headers["Allow"] = "GET, HEAD"
    return Response(body, status_code=decision.status, media_type="application/json", headers=headers)


class SignRequest(BaseModel):
    study_uid: str | None = Field(default=None, description="One study to sign for.")
    studies: list[str] | None = Field(default=None, description="Several studies.")
    ttl_seconds: int | None = Field(
        default=None, ge=1, description="Lifetime; capped by NEURONOVA_SIGNED_URL_TTL_MAX."
    )

class SignedUrl(BaseModel):
    url: str
    token: str
    query: str
    studies: list[str]
    expires_in: int
    expires_at: float



def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the guard for one data dir (tests pass their own settings)."""
    settings = settings or get_settings()
    tokens = token_service(settings)
    # Until the lifespan has loaded the user database once, every token is refused (503).
    revocations = RevocationWatcher(get_engine(settings.sqlalchemy_url), settings.revocation_bound)
    guard = Guard(tokens, wado_plugin=settings.orthanc_wado_plugin, revocations=revocations)
    state: dict[str, AuditWriter] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state["audit"] = AuditWriter.from_settings(get_engine(settings.sqlalchemy_url), settings)
        revocations.start()
        # Answers nginx sent from the frame store on cached decisions become audit rows.
        frame_access = FrameAccessImporter(settings.log_dir / "nginx-frames.log",
                                           get_engine(settings.sqlalchemy_url),
                                           settings.run_dir / "nginx-frames.offset")
        frame_access.start()
        try:
            yield
        finally:
            frame_access.stop()
            revocations.stop()

    async def record(decision: Decision, method: str, path: str, client: str | None,
                     request_id: str | None, run: str | bytes | None = None) -> None:
        claims = decision.claims
        await state["audit"].record(
            service="proxy",
            username=claims.sub if claims else None,
            role=str(claims.role) if claims else None,
            method=method[:16],
            path=_audit_path(path),
            study=decision.study,
            decision="allow" if decision.allow else "deny",
            status=decision.status,
            reason=decision.reason,
            detail=decision.detail[:2000] or None,
            client=client,
            token_id=claims.jti if claims else None,
            request_id=(request_id or "")[:64] or None,
            server=claims.server if claims else None,
            run_id=run_id_header(run),
        )

    async def audit(request: Request, decision: Decision, method: str, path: str) -> None:
        await record(decision, method, path, _client(request), request.headers.get("x-request-id"),
                     request.headers.get(RUN_HEADER))

    class DicomWebEndpoint:
        """The hot path as a bare ASGI app: one decision, one audit row, no image bytes.

        Starlette's Request/Response objects cost about 20 µs a request here; this
        reads the three headers it needs straight from the ASGI scope.
        """

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            found = [(name, value) for name, value in scope["headers"] if name in _HOT_HEADERS]
            headers = dict(found)
            raw_path = scope.get("raw_path", b"").decode("latin-1")
            raw_query = scope.get("query_string", b"").decode("latin-1")
            method = scope["method"]
            authorization = headers.get(b"authorization")
            if len(headers) != len(found):  # which of two Authorization headers counts? neither
                decision = Decision(False, 400, "duplicate_header",
                                    "Authorization, X-Real-IP or X-Request-ID sent twice")
            else:
                decision = guard.decide(method, raw_path, raw_query,
                                        authorization.decode("latin-1") if authorization else None)
            client = headers.get(b"x-real-ip")
            peer = scope.get("client")
            request_id = headers.get(b"x-request-id")
            run = next((value for name, value in scope["headers"] if name == _RUN_HEADER), None)
            await record(decision, method, raw_path,
                         client.decode("latin-1") if client else (peer[0] if peer else None),
                         request_id.decode("latin-1") if request_id else None, run)
            if not decision.allow:
                await _deny_response(decision)(scope, receive, send)
                return
            assert decision.redirect is not None and decision.claims is not None
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"x-accel-redirect", decision.redirect.encode("latin-1")),
                (b"x-neuronova-limit", limit_key(decision.claims)),
                (b"cache-control", b"private, no-store"),
                (b"content-length", b"0"),
            ]})
            await send({"type": "http.response.body", "body": b""})

    async def decide_for_store(request: Request) -> Response:
        """nginx's ``auth_request`` for a frame or series metadata served from the frame store.

        Decides exactly as the DICOMweb route does, for the original URI. An allowed
        answer tells nginx whose token it was (jti, user, role: its access log records
        them, :mod:`neuronova_lib.frames.access_audit` audits them) and how long nginx
        may keep the decision for this study and token (:func:`decision_ttl`). A
        refusal is neither audited nor cached here: nginx sends the request to the
        DICOMweb route, which decides again, audits and answers with the reason.
        """
        original = request.headers.get("x-original-uri", "")
        raw_path, _, raw_query = original.partition("?")
        authorization = request.headers.getlist("authorization")
        if len(authorization) > 1:
            return Response(status_code=403, headers={"Cache-Control": "no-store"})
        decision = guard.decide("GET", raw_path, raw_query,
                                authorization[0] if authorization else None)
        if not decision.allow or decision.claims is None:
            return Response(status_code=401 if decision.status == 401 else 403,
                            headers={"Cache-Control": "no-store"})
        claims = decision.claims
        return Response(status_code=200, headers={
            "X-Accel-Expires": str(decision_ttl(claims.exp, revocations.bound, revocations.age())),
            "X-NeuroNova-Token-Id": claims.jti,
            "X-NeuroNova-User": claims.sub,
            "X-NeuroNova-Role": str(claims.role),
        })

    async def refused_by_nginx(request: Request) -> Response:
        """nginx's own refusals are audited here: bad or oversized requests, limits (429),
        services down or too slow (502-504)."""
        status = int(request.headers.get("x-refused-status", "400") or 400)
        original = request.headers.get("x-original-uri", "")[:_HEADER_LIMIT]
        reason, detail = nginx_refusal(status, request.headers.get("x-refused-reason"),
                                       request.headers.get("x-refused-upstream"), settings)
        decision = Decision(False, status, reason, detail)
        # The URI may hold a signed URL's token: the audit keeps the path only.
        await audit(request, decision, request.headers.get("x-original-method", "?"),
                    original.partition("?")[0])
        return Response(
            json.dumps({"detail": "request refused", "reason": reason}),
            status_code=status, media_type="application/json",
        )

    async def stow_auth(request: Request) -> Response:
        """nginx's ``auth_request`` for STOW-RS, before it reads the body.

        ``auth_request`` understands 2xx, 401 and 403 only, so every other
        refusal is answered 403; the audit record keeps the real reason.
        """
        original = request.headers.get("x-original-uri", "")
        raw_path, _, raw_query = original.partition("?")
        authorization = request.headers.getlist("authorization")
        if len(authorization) > 1:
            decision = Decision(False, 400, "duplicate_header", "Authorization sent twice")
        else:
            decision = guard.decide_stow(raw_path, raw_query,
                                         authorization[0] if authorization else None)
        await audit(request, decision, "POST", raw_path)
        if decision.allow:
            return Response(status_code=204, headers={"Cache-Control": "no-store"})
        if decision.status != 401:
            decision.status = 403
        return _deny_response(decision)

    app = FastAPI(
        title="NeuroNova guard proxy",
        lifespan=lifespan,
        docs_url=None,  # served by mount_offline_docs: no CDN
        openapi_url="/api/pacs/openapi.json",
    )
    mount_offline_docs(app, "/api/pacs")
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    app.router.routes.append(Route(PREFIX + "/{path:path}", DicomWebEndpoint(), methods=methods))
    app.router.routes.append(Route("/api/pacs/_refused", refused_by_nginx, methods=methods))
    app.router.routes.append(Route("/api/pacs/_stow_auth", stow_auth, methods=["GET", "POST"]))
    app.router.routes.append(Route("/api/pacs/_decide", decide_for_store, methods=["GET", "HEAD"]))

    def _database_refusal(claims: Claims) -> Refused | None:
        with get_engine(settings.sqlalchemy_url).connect() as conn:
            return token_refusal(conn, claims)

    async def current_claims(request: Request) -> Claims:
        """The caller's access token, checked against the database now, not the snapshot.

        Minting is rare, so a disabled user is refused here at once; refusals are audited.
        """
        claims: Claims | None = None
        try:
            claims = guard.authenticate(request.headers.get("authorization"), None)
            if claims.typ != "access":  # a signed URL's token must not extend itself
                raise Refusal(403, "signed_cannot_sign",
                              "a signed URL's token cannot mint signed URLs; use an access token")
            refused = await run_in_threadpool(_database_refusal, claims)
            if refused is not None:
                raise Refusal(refused.status, refused.reason, refused.detail)
        except Refusal as exc:
            known = claims or getattr(exc, "claims", None)
            await audit(request, Decision(False, exc.status, exc.reason, exc.detail, known),
                        "POST", "/api/pacs/sign")
            raise HTTPException(exc.status, exc.detail,
                                headers={"WWW-Authenticate": "Bearer"}) from None
        assert claims is not None
        return claims

    async def invalid_request(request: Request, exc: Exception) -> Response:
        """A sign request FastAPI could not validate (422) is audited like any refusal."""
        assert isinstance(exc, RequestValidationError)
        try:
            known: Claims | None = guard.authenticate(request.headers.get("authorization"), None)
        except Refusal:
            known = None
        fields = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors())
        await audit(request, Decision(False, 422, "invalid_request",
                                      f"invalid fields: {fields}"[:500], known),
                    request.method, request.url.path)
        return await request_validation_exception_handler(request, exc)

    app.add_exception_handler(RequestValidationError, invalid_request)

    @app.post("/api/pacs/sign", response_model=SignedUrl)
    async def sign(
        body: SignRequest, request: Request, claims: Annotated[Claims, Depends(current_claims)]
    ) -> Any:
        """Mint a study-scoped token for a viewer that cannot send headers."""
        studies = ([body.study_uid] if body.study_uid else []) + list(body.studies or [])
        decision = Decision(False, 400, "sign", claims=claims)
        try:
            if not studies or len(studies) > 16:
                raise Refusal(400, "sign_scope", "name 1 to 16 studies (study_uid or studies)")
            for uid in studies:
                check_uid(uid, "StudyInstanceUID")
            if claims.studies is not None and not set(studies) <= set(claims.studies):
                raise Refusal(403, "scope", "your token does not cover these studies")
        except Refusal as refusal:
            decision.status, decision.reason, decision.detail = refusal.status, refusal.reason, refusal.detail
            await audit(request, decision, "POST", "/api/pacs/sign")
            raise HTTPException(refusal.status, refusal.detail) from None
        ttl = min(body.ttl_seconds or settings.signed_url_ttl, settings.signed_url_ttl_max)
        # ``parent``: revoking the access token (sign-out, by jti) revokes this URL too.
        token, minted = tokens.mint(claims.sub, claims.role, "signed", ttl, studies=studies,
                                    parent=claims.jti)
        decision.allow, decision.status, decision.reason = True, 200, "signed"
        decision.detail = f"ttl={ttl}s studies={','.join(studies)}"[:500]
        await audit(request, decision, "POST", "/api/pacs/sign")
        query = f"token={token}"
        return SignedUrl(
            url=f"{settings.public_dicomweb_url}/studies/{studies[0]}?{query}",
            token=token, query=query, studies=studies,
            expires_in=ttl, expires_at=float(minted["exp"]),
        )

    @app.get("/api/pacs/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "time": time.time()}

    return app
