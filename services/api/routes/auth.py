"""Sign-in and token refresh.

A sign-in gives a short-lived access token (sent as ``Authorization: Bearer``)
and a longer-lived refresh token. Refresh tokens rotate: each is good for one
refresh, and presenting one a second time means it was copied, so every refresh
token of that user is revoked (reuse detection) and the user signs in again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field
from sqlalchemy import CursorResult, update

from neuronova_lib.db.models import RefreshToken, User
from neuronova_lib.db.users import authenticate, get_user
from neuronova_lib.security.tokens import TokenError

from ..auditing import write_audit
from ..deps import SessionDep, SettingsDep, TokenServiceDep

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


def _issue_tokens(
    db: SessionDep, tokens: TokenServiceDep, settings: SettingsDep, user: User
) -> tuple[TokenResponse, str]:
    """Mint an access and a refresh token for ``user``; record the refresh jti.

    Returns the response and the access token's jti (for the audit record).
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


@router.post(
    "/token",
    response_model=TokenResponse,
    responses={401: {"description": "Wrong username or password"},
               403: {"description": "Account disabled"}},
)
def login(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    db: SessionDep,
    tokens: TokenServiceDep,
    settings: SettingsDep,
) -> TokenResponse:
    """Sign in with username and password (OAuth2 password form); every attempt is audited."""
    user = authenticate(db, form.username, form.password)
    if user is None:
        # The client is not told which of the two was wrong; the audit log is.
        known = get_user(db, form.username) is not None
        write_audit(
            db, request, decision="deny", status=401, reason="bad_credentials",
            username=form.username, detail="wrong password" if known else "unknown user",
        )
        db.commit()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"{BAD_CREDENTIALS}; check both and try again",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not user.is_active:
        write_audit(
            db, request, decision="deny", status=403, reason="inactive",
            username=user.username, role=user.role, detail="account disabled",
        )
        db.commit()
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"account {user.username!r} is disabled; ask an administrator",
        )
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
    body, jti = _issue_tokens(db, tokens, settings, user)
    write_audit(db, request, decision="allow", status=200, reason="refresh",
                username=user.username, role=user.role, token_id=jti)
    db.commit()
    return body
