"""Reading the audit log (admins only): the proxy's and the API's decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, field_validator
from sqlalchemy import select

from neuronova_lib.db.models import AuditRecord

from ..deps import AdminUser, SessionDep

router = APIRouter(prefix="/audit", tags=["audit"])

MAX_LIMIT = 1000


class AuditOut(BaseModel):
    id: int
    time: datetime
    service: str
    username: str | None
    role: str | None
    method: str
    path: str
    study: str | None
    decision: str
    status: int
    reason: str
    detail: str | None
    client: str | None
    token_id: str | None

    @field_validator("time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # SQLite returns naive datetimes; every time the platform stores is UTC.
        return value if value.tzinfo else value.replace(tzinfo=UTC)


@router.get("", response_model=list[AuditOut])
def list_audit(
    db: SessionDep,
    admin: AdminUser,
    decision: Literal["allow", "deny"] | None = None,
    username: str | None = None,
    study: str | None = None,
    service: str | None = Query(default=None, description='"api" or "proxy"'),
    since: Annotated[
        datetime | None,
        Query(description="ISO 8601 time; without a zone it is taken as UTC"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> list[AuditOut]:
    """Audit records matching every filter given, newest first."""
    query = select(AuditRecord)
    if decision is not None:
        query = query.where(AuditRecord.decision == decision)
    if username is not None:
        query = query.where(AuditRecord.username == username)
    if study is not None:
        query = query.where(AuditRecord.study == study)
    if service is not None:
        query = query.where(AuditRecord.service == service)
    if since is not None:
        since = since.replace(tzinfo=UTC) if since.tzinfo is None else since
        # Stored as UTC (SQLite keeps no zone): compare in UTC.
        query = query.where(AuditRecord.time >= since.astimezone(UTC))
    query = query.order_by(AuditRecord.time.desc(), AuditRecord.id.desc()).limit(limit)
    return [AuditOut.model_validate(r, from_attributes=True) for r in db.scalars(query)]
