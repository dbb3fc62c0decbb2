"""The model registry and its promotion gate: scientists read, model owners and admins
promote and roll back (:mod:`neuronova_lib.ai.gate`). Every promotion, refusal and
rollback is audited with the user who asked."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from neuronova_lib.ai import gate, registry
from neuronova_lib.db.models import User
from neuronova_lib.security.roles import Role

from ..auditing import write_audit
from ..deps import SessionDep, SettingsDep, require_roles

router = APIRouter(prefix="/models", tags=["models"])

ModelReader = Annotated[User, Depends(require_roles(Role.scientist, Role.model_owner,
                                                    Role.admin))]
ModelOwner = Annotated[User, Depends(require_roles(Role.model_owner, Role.admin))]


class Decision(BaseModel):
    reason: str = Field(min_length=1, max_length=2000,
                        description="Why: kept with the approval and in the audit log.")


def _http_error(exc: registry.RegistryError) -> HTTPException:
    if isinstance(exc, gate.GateRefused):
        return HTTPException(exc.status, detail={"code": exc.code, "message": str(exc),
                                                 "failures": gate.failures_json(exc)})
    if isinstance(exc, registry.ModelNotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc))


@router.get("")
def list_models(settings: SettingsDep, db: SessionDep, user: ModelReader) -> list[dict[str, Any]]:
    """Every registered model with its versions, aliases, figures, approvals and what is
    served."""
    try:
        return [registry.describe(settings, name, db) for name in registry.model_names(settings)]
    except registry.RegistryError as exc:
        raise _http_error(exc) from None


@router.get("/{name}")
def get_model(name: str, settings: SettingsDep, db: SessionDep,
              user: ModelReader) -> dict[str, Any]:
    """One registered model: versions (newest first), aliases, held-out figures, approvals,
    and the version served (or why none is)."""
    try:
        return registry.describe(settings, name, db)
    except registry.RegistryError as exc:
        raise _http_error(exc) from None


def _decide(request: Request, db: Any, user: User, action: Any) -> dict[str, Any]:
    def audit(decision: str, code: int, reason: str, detail: str) -> None:
        write_audit(db, request, decision=decision, status=code, reason=reason,
                    username=user.username, role=user.role, detail=detail)

    try:
        approval = action(gate.Actor(user.username, user.role), audit)
    except registry.RegistryError as exc:
        raise _http_error(exc) from None
    return registry.approval_dict(approval)


@router.post("/{name}/versions/{version}/promote")
def promote(request: Request, name: str, version: str, payload: Decision,
            settings: SettingsDep, db: SessionDep, user: ModelOwner) -> dict[str, Any]:
    """Make ``version`` the champion if its held-out figures pass the gate (thresholds and
    the tolerance against the current champion); 409 names each figure that failed."""
    return _decide(request, db, user, lambda actor, audit: gate.promote(
        settings, db, name, version, actor, payload.reason, audit))


@router.post("/{name}/rollback")
def rollback(request: Request, name: str, payload: Decision, settings: SettingsDep,
             db: SessionDep, user: ModelOwner) -> dict[str, Any]:
    """Make the previous approved champion the champion again."""
    return _decide(request, db, user, lambda actor, audit: gate.rollback(
        settings, db, name, actor, payload.reason, audit))
