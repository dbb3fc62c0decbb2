"""``GET /api/auth/check``: nginx's ``auth_request`` for browser and program routes.

nginx asks it before every request to a protected route (``auth_request
/_auth/<roles>;``, see ``nginx/nginx.conf.j2``), passing the original request's
headers plus ``X-Original-Method`` and ``X-Original-URI``. The caller is either
a browser with the session cookie or a program with ``Authorization: Bearer
<access token>`` (the API's own verification and revocation check). Answers:

* 204 with ``X-NeuroNova-User`` and ``X-NeuroNova-Role``: nginx passes these
  (and never the client's own) to the upstream;
* 401: not signed in, or the session or token is dead; for a browser asking for
  a page, ``X-NeuroNova-Login`` holds the sign-in URL with ``next``, which nginx
  turns into a 302;
* 403: wrong role, or a cookie-authenticated state-changing request from
  another site (CSRF), with the reason in ``X-NeuroNova-Detail``.

With ``act=dashboards`` (nginx's check for ``/dashboards/``), a signed-in browser
opening a page also gets ``X-NeuroNova-Token``: a short-lived access token of its
own user (``NEURONOVA_DASHBOARD_TOKEN_TTL``, ``act`` naming the dashboards, ended by
sign-out like the session's other tokens), which nginx hands to Voilà and Voilà to the
page's kernel, so that what the page reads is read as, and audited to, that user. The
kernel trades that token for a new one at ``POST /api/auth/dashboard-token`` while the
browser session behind it lives (a page open longer than the token's lifetime).

It runs on every browser request, so a session costs one ``SELECT`` (plus a
``last_seen`` write at most every ``NEURONOVA_SESSION_TOUCH_INTERVAL``).
Refusals are audited with the original method and path; allowed checks are not
(the upstream's own work is what matters, and a page's assets would flood the log).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse

from neuronova_lib.db.browser_sessions import (
    COOKIE_NAME,
    ActiveSession,
    check_session,
    check_session_key,
    session_key_of_parent,
    session_token_parent,
)
from neuronova_lib.db.revocation import Refused, token_refusal
from neuronova_lib.security.roles import Role
from neuronova_lib.security.same_origin import cross_site_refusal
from neuronova_lib.security.tokens import TokenError

from ..auditing import write_audit
from ..deps import SessionDep, SettingsDep, TokenServiceDep
from .signin import login_url

router = APIRouter(prefix="/auth", tags=["auth"])

_URI_LIMIT = 256


def _roles(text: str) -> frozenset[Role]:
    try:
        return frozenset(Role(name.strip()) for name in text.split(",") if name.strip())
    except ValueError:
        raise ValueError(f"unknown role in {text!r}: use {', '.join(r.value for r in Role)}")


def _wants_page(request: Request, method: str) -> bool:
    """A browser navigating (GET of an HTML page), which a sign-in page can help."""
    return method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")


def browser_session(db: Any, request: Request, settings: Any, cookie: str, method: str
                    ) -> tuple[ActiveSession | None, Refused | None]:
    """The session behind this cookie, and why the request is refused if it is: the session
    is gone or stale (401, no session), or a cookie-authenticated write comes from another
    site (403, with the session). Used by nginx's check and by routes the API guards itself
    (the FHIR facade); the caller audits a refusal and commits (``last_seen``)."""
    found = check_session(db, cookie, settings)
    if not isinstance(found, ActiveSession):
        return None, found
    cross = cross_site_refusal(method, request.headers, settings.public_origin)
    if cross:
        return found, Refused(403, "cross_site", cross)
    return found, None


#: ``act`` of nginx's check for the dashboards, and ``act.sub`` of the tokens it mints.
DASHBOARDS_ACT = "dashboards"


def dashboard_token(db: Any, request: Request, settings: Any, tokens: Any,
                    found: ActiveSession, original: str) -> str:
    """An access token for the session's user, for the kernel of the dashboard page being
    opened (audited: the page and the token's id). Its ``pjti`` is the session's, so
    signing out revokes it with the session's other tokens."""
    page = original[:_URI_LIMIT].partition("?")[0]
    token, claims = tokens.mint(found.username, found.role, "access",
                                settings.dashboard_token_ttl,
                                parent=session_token_parent(found.id_hash),
                                act={"sub": DASHBOARDS_ACT, "server": DASHBOARDS_ACT})
    write_audit(db, request, decision="allow", status=200, reason="dashboard_token",
                username=found.username, role=found.role, token_id=str(claims["jti"]),
                server=DASHBOARDS_ACT, detail=f"for {page}"[:200])
    db.commit()
    return token


@router.get(
    "/check",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={204: {"description": "Allowed; X-NeuroNova-User and X-NeuroNova-Role set"},
               401: {"description": "Not signed in, or session or token no longer valid"},
               403: {"description": "Wrong role, or a cross-site request with the cookie"}},
)
def check(request: Request, db: SessionDep, settings: SettingsDep, tokens: TokenServiceDep,
          roles: str = "", act: str = "") -> Response:
    """Is this request's session cookie or bearer token good for one of ``roles``?"""
    method = request.headers.get("x-original-method", request.method).upper()[:16]
    original = request.headers.get("x-original-uri", "")

    def refuse(refusal: Refused, username: str | None = None,
               role: str | None = None) -> Response:
        record = write_audit(db, request, decision="deny", status=refusal.status,
                             reason=refusal.reason, username=username, role=role,
                             detail=refusal.detail)
        if original:  # the protected request, not this subrequest; no query (tokens)
            record.method = method
            record.path = (original[:_URI_LIMIT].partition("?")[0]
                           .encode("unicode_escape").decode("ascii"))
        db.commit()
        headers = {"X-NeuroNova-Detail": refusal.detail.encode("ascii", "replace").decode()}
        if refusal.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
            if _wants_page(request, method):
                headers["X-NeuroNova-Login"] = login_url(settings, original or "/")
        return Response(status_code=refusal.status, headers=headers)

    try:
        allowed = _roles(roles)
    except ValueError as exc:  # a typo in nginx.conf: fail closed, say where
        return refuse(Refused(403, "bad_roles", f"nginx auth_request roles: {exc}"))
    header = request.headers.get("authorization", "")
    cookie = request.cookies.get(COOKIE_NAME)
    if header[:7].lower() == "bearer ":
        try:
            claims = tokens.verify(header[7:].strip(), "access")
        except TokenError as exc:
            return refuse(Refused(401, exc.reason, exc.detail))
        refused = token_refusal(db.connection(), claims)
        if refused is not None:
            return refuse(refused, claims.sub, claims.role)
        username, role = claims.sub, str(claims.role)
    elif cookie:
        found, refused = browser_session(db, request, settings, cookie, method)
        if refused is not None:
            return refuse(refused, found and found.username, found and found.role)
        assert found is not None
        username, role = found.username, found.role
        db.commit()  # last_seen, when it was due
        if act == DASHBOARDS_ACT and _wants_page(request, method) and (
                not allowed or role in allowed):
            return Response(status_code=status.HTTP_204_NO_CONTENT, headers={
                "X-NeuroNova-User": username, "X-NeuroNova-Role": role,
                "X-NeuroNova-Token": dashboard_token(db, request, settings, tokens, found,
                                                     original)})
    else:
        return refuse(Refused(401, "not_signed_in",
                              "not signed in: sign in at /login, or send "
                              "'Authorization: Bearer <token>' (POST /api/auth/token)"))
    if allowed and role not in allowed:
        names = ", ".join(sorted(r.value for r in allowed))
        return refuse(Refused(403, "role", f"this needs the role {names}; you are signed in "
                                           f"as {username} ({role})"), username, role)
    return Response(status_code=status.HTTP_204_NO_CONTENT,
                    headers={"X-NeuroNova-User": username, "X-NeuroNova-Role": role})


@router.post(
    "/dashboard-token",
    responses={200: {"description": "A new access token for the same user and session"},
               401: {"description": "The token, or the browser session behind it, has ended"},
               403: {"description": "Not a dashboard page's token"}},
)
def renew_dashboard_token(request: Request, db: SessionDep, settings: SettingsDep,
                          tokens: TokenServiceDep) -> Response:
    """A dashboard page's kernel trades its token (``Authorization: Bearer``, still valid)
    for a fresh one, as long as the browser session it was minted for is alive: the page
    keeps working while open, and stops when its user signs out or the session ends. The
    session counts this as use (``last_seen``): the kernel renews only when the user acts."""
    def refuse(status_code: int, reason: str, detail: str, username: str | None = None,
               role: str | None = None) -> Response:
        write_audit(db, request, decision="deny", status=status_code, reason=reason,
                    username=username, role=role, detail=detail, server=DASHBOARDS_ACT)
        db.commit()
        headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
        return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)

    header = request.headers.get("authorization", "")
    if header[:7].lower() != "bearer ":
        return refuse(401, "not_signed_in", "send the page's token as 'Authorization: Bearer'")
    try:
        claims = tokens.verify(header[7:].strip(), "access")
    except TokenError as exc:
        return refuse(401, exc.reason, exc.detail)
    refused = token_refusal(db.connection(), claims)
    if refused is not None:
        return refuse(refused.status, refused.reason, refused.detail, claims.sub,
                      str(claims.role))
    if (claims.act or {}).get("sub") != DASHBOARDS_ACT or not claims.parent:
        return refuse(403, "not_a_dashboard_token", "only a dashboard page's token is renewed "
                      "here", claims.sub, str(claims.role))
    key = session_key_of_parent(db, claims.parent)
    found = check_session_key(db, key, settings) if key else None
    if not isinstance(found, ActiveSession) or found.username != claims.sub:
        db.commit()  # a dead session's row is deleted by the check
        return refuse(401, "session_ended", "the browser session of this page has ended; "
                      "sign in again", claims.sub, str(claims.role))
    token, new = tokens.mint(found.username, found.role, "access",
                             settings.dashboard_token_ttl, parent=claims.parent,
                             act={"sub": DASHBOARDS_ACT, "server": DASHBOARDS_ACT})
    write_audit(db, request, decision="allow", status=200, reason="dashboard_token_renewed",
                username=found.username, role=found.role, token_id=str(new["jti"]),
                server=DASHBOARDS_ACT, detail=f"replaces {claims.jti}")
    db.commit()
    return JSONResponse({"access_token": token, "token_type": "bearer",
                         "expires_in": settings.dashboard_token_ttl},
                        headers={"Cache-Control": "no-store"})
