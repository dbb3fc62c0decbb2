"""Browser sign-in: ``GET/POST /login`` and ``POST /logout`` (outside ``/api``).

The password check, its throttling and its audit rows are the token route's
(:func:`services.api.routes.auth.check_password`); a success starts a
server-side session (:mod:`neuronova_lib.db.browser_sessions`) carried in the
cookie ``neuronova_session`` (``HttpOnly``, ``SameSite=Strict``, ``Path=/``,
``Secure`` when ``NEURONOVA_PUBLIC_URL`` is https), and redirects to ``next``
when it is a path on this site.

CSRF: both forms are refused when the browser says the post came from another
site (Fetch Metadata / Origin, :mod:`neuronova_lib.security.same_origin`), and
each carries a token: the sign-in form a double-submit token (a random value in
the form and in a short-lived cookie only ``/login`` receives), the sign-out form
the session's synchronizer token (kept in its row).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from neuronova_lib.config import Settings
from neuronova_lib.db.browser_sessions import (
    COOKIE_NAME,
    ActiveSession,
    check_session,
    end_session,
    session_token_parent,
    start_session,
)
from neuronova_lib.db.revocation import revoke_jti
from neuronova_lib.security.same_origin import cross_site_refusal, safe_next

from ..auditing import write_audit
from ..deps import SessionDep, SettingsDep
from ..login_page import PAGE_HEADERS, refused_page, sign_in_page, signed_in_page
from .auth import check_password

router = APIRouter(include_in_schema=False)

#: The sign-in form's double-submit cookie; only ``/login`` ever receives it.
LOGIN_CSRF_COOKIE = "neuronova_login_csrf"
LOGIN_CSRF_TTL = 3600


def public_prefix(settings: Settings) -> str:
    """The path prefix users see before the platform's own paths (``""`` at the root)."""
    return urlsplit(settings.public_url).path.rstrip("/")


def login_url(settings: Settings, next_path: str | None) -> str:
    """``/login?next=…`` under the public prefix, ``next`` percent-encoded."""
    url = f"{public_prefix(settings)}/login"
    return f"{url}?next={quote(next_path, safe='/')}" if next_path else url


def set_session_cookie(response: Response, settings: Settings, value: str) -> None:
    response.set_cookie(COOKIE_NAME, value, path="/", httponly=True, samesite="strict",
                        secure=settings.secure_cookies)


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict",
                           secure=settings.secure_cookies)


def current_session(request: Request, db: SessionDep,
                    settings: Settings) -> ActiveSession | None:
    """This browser's live session, or ``None`` (a dead one's row is removed)."""
    cookie = request.cookies.get(COOKIE_NAME)
    if not cookie:
        return None
    found = check_session(db, cookie, settings)
    db.commit()
    return found if isinstance(found, ActiveSession) else None


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=PAGE_HEADERS)


def _form_page(settings: Settings, next_path: str, *, status: int = 200, username: str = "",
               error: str | None = None, note: str | None = None) -> HTMLResponse:
    """The sign-in form with a fresh double-submit token (form field and cookie)."""
    token = secrets.token_urlsafe(24)
    response = _html(sign_in_page(f"{public_prefix(settings)}/login", next_path, token,
                                  username=username, error=error, note=note), status)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=LOGIN_CSRF_TTL,
                        path=f"{public_prefix(settings)}/login", httponly=True,
                        samesite="strict", secure=settings.secure_cookies)
    return response


def _refuse_post(request: Request, db: SessionDep, settings: Settings, reason: str,
                 detail: str, username: str | None = None) -> HTMLResponse:
    write_audit(db, request, decision="deny", status=403, reason=reason,
                username=username, detail=detail)
    db.commit()
    return _html(refused_page(detail, login_url(settings, None)), 403)


@router.get("/login")
def login_form(request: Request, db: SessionDep, settings: SettingsDep,
               next: str | None = None, signed_out: int = 0) -> HTMLResponse:
    """The sign-in form; a browser already signed in is offered to continue or sign out."""
    target = safe_next(next)
    active = current_session(request, db, settings)
    if active is not None:
        return _html(signed_in_page(f"{public_prefix(settings)}/logout",
                                    public_prefix(settings) + target, active.csrf_token,
                                    active.username, active.role))
    note = "You are signed out." if signed_out else None
    return _form_page(settings, target, note=note)


@router.post("/login", response_model=None)
def login_submit(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=256)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=4096)] = "/",
) -> Response:
    """Check the password; on success start a session and go to ``next`` (303)."""
    target = safe_next(next)
    cross = cross_site_refusal("POST", request.headers, settings.public_origin)
    if cross:
        return _refuse_post(request, db, settings, "cross_site", cross, username or None)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not csrf or not cookie or not hmac.compare_digest(csrf, cookie):
        return _refuse_post(request, db, settings, "csrf",
                            "this sign-in form has expired or did not come from this "
                            "platform; open the sign-in page again", username or None)
    if not username or not password:
        return _form_page(settings, target, status=400, username=username,
                          error="enter your username and your password")
    try:
        user = check_password(request, db, settings, username, password)
    except HTTPException as exc:
        return _form_page(settings, target, status=exc.status_code, username=username,
                          error=str(exc.detail))
    old = request.cookies.get(COOKIE_NAME)
    if old:
        end_session(db, old)  # never keep a session id chosen before sign-in
    session_id, row = start_session(db, user, settings)
    write_audit(db, request, decision="allow", status=303, reason="login",
                username=user.username, role=user.role,
                detail="browser session", token_id=row.id_hash[:16])
    db.commit()
    response = RedirectResponse(public_prefix(settings) + target, status_code=303,
                                headers={"Cache-Control": "no-store"})
    set_session_cookie(response, settings, session_id)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=f"{public_prefix(settings)}/login",
                           httponly=True, samesite="strict", secure=settings.secure_cookies)
    return response


@router.post("/logout", response_model=None)
def logout_submit(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """End this browser's session (its row is deleted) and go back to the sign-in page."""
    cross = cross_site_refusal("POST", request.headers, settings.public_origin)
    if cross:
        return _refuse_post(request, db, settings, "cross_site", cross)
    active = current_session(request, db, settings)
    if active is not None:
        if not csrf or not hmac.compare_digest(csrf, active.csrf_token):
            return _refuse_post(request, db, settings, "csrf",
                                "this sign-out form did not come from your session; "
                                "open the sign-in page and sign out there", active.username)
        end_session(db, request.cookies[COOKIE_NAME])
        # The session's OHIF and dashboard tokens end with it (kept as long as they live).
        revoke_jti(db, session_token_parent(active.id_hash), reason="logout",
                   username=active.username, expires_at=datetime.now(UTC)
                   + timedelta(seconds=max(settings.signed_url_ttl_max,
                                           settings.dashboard_token_ttl)))
        write_audit(db, request, decision="allow", status=303, reason="logout",
                    username=active.username, role=active.role, detail="browser session",
                    token_id=active.id_hash[:16])
        db.commit()
    response = RedirectResponse(f"{login_url(settings, None)}?signed_out=1", status_code=303,
                                headers={"Cache-Control": "no-store"})
    clear_session_cookie(response, settings)
    return response
