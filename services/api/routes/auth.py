"""Sign-in and token refresh.

A sign-in gives a short-lived access token (sent as ``Authorization: Bearer``)
and a longer-lived refresh token. Refresh tokens rotate: each is good for one
refresh, and presenting one a second time means it was copied, so every refresh
token of that user is revoked (reuse detection) and the user signs in again.
The refresh tokens of one sign-in form a family (``refresh_tokens.family``);
sign-out revokes the family and the access tokens minted with it.

Sign-in is throttled per account (:mod:`neuronova_lib.db.throttle`), and a
disabled account is answered exactly like a wrong password: same status, same
body, one argon2 verification either way.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import CursorResult, update

from neuronova_lib.db import throttle
from neuronova_lib.db.models import RefreshToken, User
from neuronova_lib.db.revocation import revoke_family, revoke_jti
from neuronova_lib.db.users import authenticate, get_user
from neuronova_lib.security.tokens import TokenError

from ..auditing import write_audit
from ..token_exchange import GRANT_TYPE, ExchangeForm, exchange
from ..deps import SessionDep, SettingsDep, TokenServiceDep, oauth2_scheme

router = APIRouter(prefix="/auth", tags=["auth"])

BAD_CREDENTIALS = "incorrect username or password"


class TokenResponse(BaseModel):
    """What a sign-in or a refresh returns (OAuth2 token response plus the role)."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires.")
    role: str


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1)


class LogoutRequest(BaseModel):
    refresh_token: str | None = Field(
        default=None, min_length=1,
        description="The sign-in's current refresh token: its whole family is revoked.")


def _issue_tokens(
    db: SessionDep, tokens: TokenServiceDep, settings: SettingsDep, user: User,
    family: str | None = None,
) -> tuple[TokenResponse, str]:
    """Mint an access and a refresh token for ``user``; record the refresh jti.

    ``family`` is the sign-in the refresh continues (``None``: a new sign-in,
    whose family is named after its first refresh token). Returns the response
    and the access token's jti (for the audit record).
    """
    access, access_claims = tokens.mint(
        user.username, user.role, "access", settings.access_token_ttl
    )
    refresh, refresh_claims = tokens.mint(
        user.username, user.role, "refresh", settings.refresh_token_ttl
    )
    db.add(
        RefreshToken(
            jti=refresh_claims["jti"],
            username=user.username,
            expires_at=datetime.fromtimestamp(refresh_claims["exp"], UTC),
            family=family or refresh_claims["jti"],
            access_jti=access_claims["jti"],
        )
    )
    body = TokenResponse(
        access_token=access,
        expires_in=settings.access_token_ttl,
        refresh_token=refresh,
        refresh_expires_in=settings.refresh_token_ttl,
        role=user.role,
    )
    return body, str(access_claims["jti"])


def check_password(request: Request, db: SessionDep, settings: SettingsDep,
                   username: str, password: str) -> User:
    """The active user these credentials belong to, or an audited 401 / 429.

    The one password check of the platform: the token route and the browser
    sign-in (``/login``) both call it, so throttling, the no-oracle answer and
    the audit rows are the same for both. A success clears the account's
    failure count (the caller commits with its own audit row).
    """
    wait = throttle.retry_after(db, username)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        write_audit(db, request, decision="deny", status=429, reason="signin_throttled",
                    username=username, detail=f"account waits {seconds} s")
        db.commit()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"too many failed sign-ins for this account; try again in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )
    # One argon2 verification whatever the account's state (authenticate() verifies a
    # dummy hash for unknown names), so timing says nothing either.
    user = authenticate(db, username, password)
    if user is None or not user.is_active:
        if user is not None:
            reason, detail, role = "inactive", "account disabled", user.role
        else:
            known = get_user(db, username) is not None
            reason, detail, role = ("bad_credentials",
                                    "wrong password" if known else "unknown user", None)
        wait = throttle.record_failure(db, username, settings)
        if wait:
            detail += f"; account waits {math.ceil(wait)} s"
        write_audit(db, request, decision="deny", status=401, reason=reason,
                    username=username, role=role, detail=detail)
        db.commit()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"{BAD_CREDENTIALS}; check both and try again",
            headers={"WWW-Authenticate": "Bearer"},
        )
    throttle.clear(db, user.username)
    return user


@router.post(
    "/token",
    response_model=TokenResponse,
    responses={400: {"description": "Token exchange refused (RFC 8693: invalid_grant, ...)"},
               401: {"description": "Wrong username or password, account disabled, or (token "
                                    "exchange) bad client credentials"},
               429: {"description": "Too many failed sign-ins for this account; see "
                                    "Retry-After"}},
)
def login(
    request: Request,
    db: SessionDep,
    tokens: TokenServiceDep,
    settings: SettingsDep,
    grant_type: Annotated[str | None, Form()] = None,
    username: Annotated[str | None, Form()] = None,
    password: Annotated[str | None, Form(json_schema_extra={"format": "password"})] = None,
    subject_token: Annotated[str | None, Form()] = None,
    subject_token_type: Annotated[str | None, Form()] = None,
    requested_subject: Annotated[str | None, Form()] = None,
    requested_token_type: Annotated[str | None, Form()] = None,
    client_id: Annotated[str | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
    kernel: Annotated[str | None, Form(max_length=64)] = None,
) -> Any:
    """Sign in with username and password (OAuth2 password form), or, for the hub's
    kernel-token service, exchange a kernel's hub token (RFC 8693,
    ``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``; see
    :mod:`services.api.token_exchange`). Every attempt is audited.

    A disabled account gets the answer a wrong password gets (no oracle); the
    audit log says which it was.
    """
    if grant_type == GRANT_TYPE:
        return exchange(request, db, tokens, settings, ExchangeForm(
            subject_token=subject_token, subject_token_type=subject_token_type,
            requested_subject=requested_subject, requested_token_type=requested_token_type,
            client_id=client_id, client_secret=client_secret, kernel=kernel))
    if grant_type not in (None, "", "password") or username is None or password is None:
        write_audit(db, request, decision="deny", status=400, reason="bad_grant",
                    username=username, detail=f"grant_type {grant_type!r}"[:200])
        db.commit()
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail="send username and password (grant_type=password), or a token exchange "
                   f"(grant_type={GRANT_TYPE})")
    user = check_password(request, db, settings, username, password)
    body, jti = _issue_tokens(db, tokens, settings, user)
    write_audit(
        db, request, decision="allow", status=200, reason="login",
        username=user.username, role=user.role, token_id=jti,
    )
    db.commit()
    return body


@router.post(
    "/refresh",
    response_model=TokenResponse,
    responses={401: {"description": "Refresh token invalid, expired, used or revoked"},
               403: {"description": "Account disabled"}},
)
def refresh(
    request: Request,
    payload: RefreshRequest,
    db: SessionDep,
    tokens: TokenServiceDep,
    settings: SettingsDep,
) -> TokenResponse:
    """Trade a refresh token for a new access token and a new refresh token."""

    def refuse(reason: str, detail: str, username: str | None = None) -> HTTPException:
        write_audit(db, request, decision="deny", status=401, reason=reason,
                    username=username, detail=detail)
        db.commit()
        return HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=detail,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )

    try:
        claims = tokens.verify(payload.refresh_token, "refresh")
    except TokenError as exc:
        raise refuse(f"refresh_{exc.reason}", exc.detail) from None
    row = db.get(RefreshToken, claims.jti)
    if row is None or row.username != claims.sub:
        raise refuse("refresh_unknown", "unknown refresh token; sign in again", claims.sub)
    if row.revoked:
        raise refuse("refresh_revoked", "refresh token was revoked; sign in again", claims.sub)
    # Mark it used only if nobody else has: two concurrent refreshes with the
    # same token cannot both succeed.
    marked = db.execute(
        update(RefreshToken)
        .where(RefreshToken.jti == claims.jti, RefreshToken.used_at.is_(None))
        .values(used_at=datetime.now(UTC))
    )
    claimed = cast("CursorResult[Any]", marked).rowcount
    if claimed != 1:
        db.execute(
            update(RefreshToken).where(RefreshToken.username == claims.sub).values(revoked=True)
        )
        raise refuse(
            "refresh_reuse",
            "this refresh token was already used, so it may have been copied; every "
            "session of this account has been signed out: sign in again",
            claims.sub,
        )
    user = get_user(db, claims.sub)
    if user is None:
        raise refuse("refresh_unknown_user", f"user {claims.sub!r} no longer exists", claims.sub)
    if not user.is_active:
        write_audit(db, request, decision="deny", status=403, reason="inactive",
                    username=user.username, role=user.role, detail="account disabled")
        db.commit()
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"account {user.username!r} is disabled; ask an administrator",
        )
    body, jti = _issue_tokens(db, tokens, settings, user, family=row.family or row.jti)
    write_audit(db, request, decision="allow", status=200, reason="refresh",
                username=user.username, role=user.role, token_id=jti)
    db.commit()
    return body


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={400: {"description": "Neither a refresh token nor an access token was sent"},
               401: {"description": "The token sent is not valid"}},
)
def logout(
    request: Request,
    db: SessionDep,
    tokens: TokenServiceDep,
    settings: SettingsDep,
    bearer: Annotated[str | None, Depends(oauth2_scheme)],
    payload: LogoutRequest | None = None,
) -> None:
    """Sign out: revoke the sign-in's refresh family and its access tokens.

    Send the refresh token in the body (its whole family is revoked, and every
    access token minted with it), the access token as ``Authorization: Bearer``
    (that token is revoked), or both. The guard refuses them within
    ``NEURONOVA_REVOCATION_BOUND`` seconds, the API at once.
    """
    refresh_token = payload.refresh_token if payload else None
    if not refresh_token and not bearer:
        write_audit(db, request, decision="deny", status=400, reason="logout_nothing",
                    detail="no token sent")
        db.commit()
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail="send the refresh token as JSON {\"refresh_token\": ...}, the access "
                   "token as 'Authorization: Bearer <token>', or both",
        )
    revoked: list[str] = []
    username: str | None = None
    try:
        if refresh_token:
            claims = tokens.verify(refresh_token, "refresh")
            username = claims.sub
            row = db.get(RefreshToken, claims.jti)
            if row is not None and row.username == claims.sub:
                count = revoke_family(db, row.family or row.jti, reason="logout",
                                      access_ttl=settings.access_token_ttl)
                revoked.append(f"refresh family of {count} token(s)")
        if bearer:
            claims = tokens.verify(bearer, "access")
            username = username or claims.sub
            revoke_jti(db, claims.jti, username=claims.sub, reason="logout",
                       expires_at=datetime.fromtimestamp(claims.exp, UTC))
            revoked.append("access token")
    except TokenError as exc:
        db.rollback()
        write_audit(db, request, decision="deny", status=401, reason=f"logout_{exc.reason}",
                    username=username, detail=exc.detail)
        db.commit()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail=exc.detail,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None
    write_audit(db, request, decision="allow", status=204, reason="logout",
                username=username, detail="revoked " + " and ".join(revoked or ["nothing"]))
    db.commit()
