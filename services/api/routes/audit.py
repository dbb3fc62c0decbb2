"""Reading the audit log (admins only): the proxy's and the API's decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import or_, select

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
    repeat_count: int = Field(
        description="Decisions this record stands for: 1, or more for repeated refusals "
        "folded together (then `time` is the first and `last_time` the last)")
    last_time: datetime | None
    server: str | None = Field(
        default=None, description="JupyterHub server (user/name) whose kernel token was used")
    run_id: str | None = Field(
        default=None, description="MLflow run active in the reader (X-NeuroNova-Run)")

    @field_validator("time", "last_time")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # SQLite returns naive datetimes; every time the platform stores is UTC.
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


@router.get("", response_model=list[AuditOut])
def list_audit(
    db: SessionDep,
    admin: AdminUser,
    decision: Literal["allow", "deny"] | None = None,
    username: str | None = None,
    study: str | None = None,
    service: str | None = Query(default=None, description='"api", "proxy" or "dicom"'),
    server: str | None = Query(default=None, description="JupyterHub server, e.g. scientist/"),
    run_id: str | None = Query(default=None, description="MLflow run id"),
    since: Annotated[
        datetime | None,
        Query(description="ISO 8601 time; without a zone it is taken as UTC"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> list[AuditOut]:
    """Audit records matching every filter given, newest first.

    A refusal record may stand for several refusals (``repeat_count``): the
    writer folds repeats of one kind from one client within a window, so that a
    flood cannot grow the log without bound. Allowed requests are a record each.
    """
    query = select(AuditRecord)
    if decision is not None:
        query = query.where(AuditRecord.decision == decision)
    if username is not None:
        query = query.where(AuditRecord.username == username)
    if study is not None:
        query = query.where(AuditRecord.study == study)
    if service is not None:
        query = query.where(AuditRecord.service == service)
    if server is not None:
        query = query.where(AuditRecord.server == server)
    if run_id is not None:
        query = query.where(AuditRecord.run_id == run_id)
    if since is not None:
        since = since.replace(tzinfo=UTC) if since.tzinfo is None else since
        # Stored as UTC (SQLite keeps no zone): compare in UTC. A folded record counts
        # when any of its refusals is that recent.
        since = since.astimezone(UTC)
        query = query.where(or_(AuditRecord.time >= since, AuditRecord.last_time >= since))
    query = query.order_by(AuditRecord.time.desc(), AuditRecord.id.desc()).limit(limit)
    return [AuditOut.model_validate(r, from_attributes=True) for r in db.scalars(query)]
