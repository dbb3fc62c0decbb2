"""Revoking tokens before they expire (admins): one token by jti, or all of a user's.

The API refuses a revoked token at once; the guard within
``NEURONOVA_REVOCATION_BOUND`` seconds (see :mod:`neuronova_lib.db.revocation`).
The jti of a token is in the audit log (``token_id``) of every request it made.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field, model_validator

from neuronova_lib.config import Settings
from neuronova_lib.db.revocation import revoke_jti, revoke_user

from ..auditing import write_audit
from ..deps import AdminUser, SessionDep, SettingsDep

router = APIRouter(prefix="/tokens", tags=["tokens"])


class RevokeRequest(BaseModel):
    jti: str | None = Field(default=None, min_length=1, max_length=64,
                            description="One token (access, refresh or signed URL).")
    username: str | None = Field(default=None, min_length=1, max_length=64,
                                 description="Every token this user holds now.")

    @model_validator(mode="after")
    def _one_of(self) -> RevokeRequest:
        if (self.jti is None) == (self.username is None):
            raise ValueError("name exactly one of jti or username")
        return self


class RevokeResult(BaseModel):
    revoked: str
    guard_bound_s: float = Field(description="The guard refuses it within this many seconds.")


def longest_lifetime(settings: Settings) -> timedelta:
    """How long any token of the platform can live: a revoked jti is kept that long."""
    return timedelta(seconds=max(settings.access_token_ttl, settings.refresh_token_ttl,
                                 settings.signed_url_ttl_max))


@router.post("/revoke", response_model=RevokeResult,
             responses={404: {"description": "No such user"}})
def revoke(request: Request, payload: RevokeRequest, db: SessionDep, settings: SettingsDep,
           admin: AdminUser) -> RevokeResult:
    """Revoke one token by ``jti`` or every current token of ``username`` (admins only)."""
    if payload.jti is not None:
        revoke_jti(db, payload.jti, reason=f"revoked by {admin.username}",
                   expires_at=datetime.now(UTC) + longest_lifetime(settings))
        what = f"token {payload.jti}"
    else:
        assert payload.username is not None
        try:
            revoke_user(db, payload.username)
        except LookupError:
            raise HTTPException(status.HTTP_404_NOT_FOUND,
                                detail=f"no user {payload.username!r}") from None
        what = f"every token of {payload.username}"
    write_audit(db, request, decision="allow", status=200, reason="token_revoked",
                username=admin.username, role=admin.role, detail=what, token_id=payload.jti)
    db.commit()
    return RevokeResult(revoked=what, guard_bound_s=settings.revocation_bound)
