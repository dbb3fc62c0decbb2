"""Dependencies of the API routes, each named once so a signature says what a route needs.

``def read_me(user: CurrentUser)`` needs a signed-in user; ``def list_users(db:
SessionDep, admin: AdminUser)`` needs a database session and an admin. The
objects themselves (settings, session factory, token service) are built once
in :func:`services.api.app.create_app`'s lifespan and kept on ``app.state``,
so tests and deployments inject them instead of the routes reaching for globals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session, sessionmaker

from neuronova_lib.config import Settings
from neuronova_lib.db.models import User
from neuronova_lib.db.revocation import token_refusal
from neuronova_lib.db.users import get_user
from neuronova_lib.security.roles import Role
from neuronova_lib.security.tokens import Claims, TokenError, TokenService

from .auditing import write_audit

#: Where Swagger UI's "Authorize" button signs in. ``auto_error=False``: a
#: missing token gets our own message, which says what to do.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def _unauthorized(detail: str, error: str | None = "invalid_token") -> HTTPException:
    """401 with the ``WWW-Authenticate`` challenge RFC 6750 asks for."""
    challenge = f'Bearer error="{error}"' if error else "Bearer"
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": challenge}
    )


def get_settings_dep(request: Request) -> Settings:
    """The settings the app was created with (not the process-wide cache)."""
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Iterator[Session]:
    """One session per request, closed afterwards; routes commit what they change."""
    sessions: sessionmaker[Session] = request.app.state.sessions
    with sessions() as session:
        yield session


def get_token_service(request: Request) -> TokenService:
    """The app's token service; its keyring follows rotations and revocations on disk."""
    tokens: TokenService = request.app.state.tokens
    return tokens


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_db)]
TokenServiceDep = Annotated[TokenService, Depends(get_token_service)]


def _refuse(request: Request, db: Session, reason: str, detail: str,
            username: str | None = None, error: str | None = "invalid_token") -> HTTPException:
    """A 401, written to the audit log first (every refusal of the API is audited)."""
    write_audit(db, request, decision="deny", status=401, reason=reason,
                username=username, detail=detail)
    db.commit()
    return _unauthorized(detail, error)


def get_access_claims(
    request: Request,
    db: SessionDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    tokens: TokenServiceDep,
) -> Claims:
    """The verified claims of the bearer access token, or 401 (audited).

    A token revoked by jti or by user (``neuronova tokens revoke``, sign-out) is
    refused here at once; the database is asked on every request.
    """
    if not token:
        raise _refuse(
            request, db, "no_token",
            "not signed in: get a token from POST /api/auth/token and send it as "
            "'Authorization: Bearer <token>'",
            error=None,
        )
    try:
        claims = tokens.verify(token, "access")
    except TokenError as exc:
        raise _refuse(request, db, exc.reason, exc.detail) from None
    refused = token_refusal(db.connection(), claims, account=False)
    if refused is not None:
        raise _refuse(request, db, refused.reason, refused.detail, claims.sub)
    return claims


AccessClaims = Annotated[Claims, Depends(get_access_claims)]


def get_current_user(request: Request, db: SessionDep, claims: AccessClaims) -> User:
    """The user the access token speaks for, read from the database.

    Checked on every request so that a deleted or disabled account stops
    working at once, not when its token expires.
    """
    user = get_user(db, claims.sub)
    if user is None:
        raise _refuse(request, db, "unknown_user",
                      f"user {claims.sub!r} no longer exists; sign in again", claims.sub)
    if not user.is_active:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"account {user.username!r} is disabled"
        )
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_roles(*roles: Role) -> Callable[..., User]:
    """A dependency admitting only users with one of ``roles`` (others get 403).

    The role comes from the database, not from the token, so demoting someone
    takes effect on their next request. A refusal is written to the audit log.

    Use it as ``admin: Annotated[User, Depends(require_roles(Role.admin))]`` or
    in ``dependencies=[Depends(require_roles(...))]``.
    """
    if not roles:
        raise ValueError("require_roles() needs at least one role")
    allowed = frozenset(Role(r) for r in roles)
    names = ", ".join(sorted(r.value for r in allowed))

    def check_role(request: Request, db: SessionDep, user: CurrentUser) -> User:
        if user.role in allowed:
            return user
        detail = f"this needs the role {names}; you are signed in as {user.role}"
        write_audit(
            db, request, decision="deny", status=403, reason="role",
            username=user.username, role=user.role, detail=detail,
        )
        db.commit()
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=detail)

    return check_role


AdminUser = Annotated[User, Depends(require_roles(Role.admin))]
