"""The ingest quarantine (admins only): refused files, their reasons, download, delete, purge.

Files the ingest gate refuses (STOW-RS, uploads, bulk transcoding) are kept by
:class:`neuronova_lib.ingest.Quarantine` under ``$NEURONOVA_HOME/quarantine/``,
content-addressed by SHA-256. Every call here is written to the audit log.
Retention (``NEURONOVA_QUARANTINE_RETENTION_DAYS``) is also applied
automatically by :mod:`services.api.quarantine_retention`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from neuronova_lib.config import Settings
from neuronova_lib.db.models import User
from neuronova_lib.ingest import REASONS, Quarantine, QuarantineEntry

from ..auditing import write_audit
from ..deps import AdminUser, SessionDep, SettingsDep

router = APIRouter(prefix="/ingest/quarantine", tags=["quarantine"])

MAX_LIMIT = 1000

Sha256 = Annotated[str, Path(
    pattern="^[0-9a-fA-F]{64}$",
    description="The file's SHA-256, 64 hex digits (as listed by GET /api/ingest/quarantine).",
)]


class Submission(BaseModel):
    reason: str
    reason_description: str | None = None
    message: str
    sender: str | None = None
    route: str | None = Field(default=None, description="Where it came in: stow, upload, "
                              "transcode, ...")
    at: datetime


class QuarantineView(BaseModel):
    sha256: str
    size: int = Field(description="Bytes.")
    reason: str = Field(description="Reason code of the latest refusal.")
    reason_description: str | None = Field(
        default=None, description="What the reason code means (None for an unknown code).")
    message: str = Field(description="The gate's message for the latest refusal.")
    first_seen: datetime
    last_seen: datetime
    submissions: list[Submission] = Field(description="Every time these bytes were refused.")
    file_url: str = Field(description="Where to download the bytes.")


class QuarantineList(BaseModel):
    total: int = Field(description="Entries matching the filters, before paging.")
    offset: int
    limit: int
    retention_days: float = Field(description="NEURONOVA_QUARANTINE_RETENTION_DAYS: entries "
                                  "last refused longer ago are purged (hourly and at startup).")
    entries: list[QuarantineView]


class PurgeRequest(BaseModel):
    older_than_days: float | None = Field(
        default=None, ge=0, description="Purge entries last refused longer ago than this "
        "(default: the configured retention).")


class PurgeResult(BaseModel):
    removed: list[str] = Field(description="SHA-256 of every entry removed.")
    older_than_days: float
    cutoff: datetime
    remaining: int


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _view(entry: QuarantineEntry) -> QuarantineView:
    return QuarantineView(
        sha256=entry.sha256, size=entry.size, reason=entry.reason,
        reason_description=REASONS.get(entry.reason), message=entry.message,
        first_seen=entry.first_seen, last_seen=entry.last_seen,
        submissions=[
            Submission(reason=s.get("reason") or "unknown",
                       reason_description=REASONS.get(s.get("reason") or ""),
                       message=s.get("message") or "", sender=s.get("sender"),
                       route=s.get("route"), at=s["at"])
            for s in entry.submissions
        ],
        file_url=f"/api/ingest/quarantine/{entry.sha256}/file",
    )


def _audit(db: SessionDep, request: Request, admin: User, code: int, reason: str,
           detail: str) -> None:
    write_audit(db, request, decision="allow", status=code, reason=reason,
                username=admin.username, role=admin.role, detail=detail)
    db.commit()


def _not_found(sha: str, db: SessionDep, request: Request, admin: User,
               reason: str) -> HTTPException:
    """Audit the miss; the 404 to raise, saying what to do."""
    _audit(db, request, admin, 404, reason, f"{sha}: not in quarantine")
    return HTTPException(
        status.HTTP_404_NOT_FOUND,
        detail=f"no quarantined file {sha}: it was never refused here, or it was deleted or "
               "purged by retention; GET /api/ingest/quarantine lists what is kept",
    )


def _entry_or_404(store: Quarantine, sha: str, db: SessionDep, request: Request,
                  admin: User, reason: str) -> QuarantineEntry:
    entry = store.get(sha)
    if entry is None:
        raise _not_found(sha, db, request, admin, reason)
    return entry


def _store(settings: Settings) -> Quarantine:
    return Quarantine(settings)


@router.get("", response_model=QuarantineList)
def list_quarantine(
    request: Request, db: SessionDep, admin: AdminUser, settings: SettingsDep,
    reason: Annotated[str | None, Query(
        description="Only entries refused for this reason code (any submission).")] = None,
    route: Annotated[str | None, Query(
        description="Only entries submitted through this route (any submission).")] = None,
    since: Annotated[datetime | None, Query(
        description="Only entries last refused at or after this ISO 8601 time "
        "(without a zone: UTC).")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> QuarantineList:
    """Quarantined files, most recently refused first (admins only)."""
    entries = _store(settings).list()
    if reason is not None:
        entries = [e for e in entries
                   if reason == e.reason or any(s.get("reason") == reason for s in e.submissions)]
    if route is not None:
        entries = [e for e in entries if any(s.get("route") == route for s in e.submissions)]
    if since is not None:
        cutoff = _utc(since)
        entries = [e for e in entries if e.last_seen >= cutoff]
    page = entries[offset:offset + limit]
    filters = {k: v for k, v in (("reason", reason), ("route", route), ("since", since)) if v}
    _audit(db, request, admin, 200, "quarantine_list",
           f"{len(page)} of {len(entries)} entries"
           + (f"; filters {filters}" if filters else ""))
    return QuarantineList(total=len(entries), offset=offset, limit=limit,
                          retention_days=settings.quarantine_retention_days,
                          entries=[_view(e) for e in page])


@router.post("/purge", response_model=PurgeResult)
def purge_quarantine(
    request: Request, db: SessionDep, admin: AdminUser, settings: SettingsDep,
    payload: Annotated[PurgeRequest | None, Body()] = None,
    older_than_days: Annotated[float | None, Query(
        ge=0, description="As in the body; default: the configured retention.")] = None,
) -> PurgeResult:
    """Apply the retention now, or purge entries older than ``older_than_days`` (admins only)."""
    from_body = payload.older_than_days if payload is not None else None
    if from_body is not None and older_than_days is not None and from_body != older_than_days:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail="older_than_days given twice with different values; give it in the body "
                   "or in the query, not both",
        )
    days = from_body if from_body is not None else older_than_days
    if days is None:
        days = settings.quarantine_retention_days
    store = _store(settings)
    now = datetime.now(UTC)
    removed = store.purge(timedelta(days=days), now=now)
    _audit(db, request, admin, 200, "quarantine_purge",
           f"older than {days:g} days: removed {len(removed)}"
           + (f": {', '.join(removed)}" if removed else ""))
    return PurgeResult(removed=removed, older_than_days=days, cutoff=now - timedelta(days=days),
                       remaining=len(store.list()))


@router.get("/{sha256}", response_model=QuarantineView,
            responses={404: {"description": "Not in quarantine"}})
def read_quarantine(
    sha256: Sha256, request: Request, db: SessionDep, admin: AdminUser, settings: SettingsDep,
) -> QuarantineView:
    """One quarantined file's metadata: reasons, senders, routes, times (admins only)."""
    sha = sha256.lower()
    entry = _entry_or_404(_store(settings), sha, db, request, admin, "quarantine_read")
    _audit(db, request, admin, 200, "quarantine_read", sha)
    return _view(entry)


@router.get("/{sha256}/file", response_class=FileResponse,
            responses={200: {"content": {"application/dicom": {}}},
                       404: {"description": "Not in quarantine"}})
def download_quarantine(
    sha256: Sha256, request: Request, db: SessionDep, admin: AdminUser, settings: SettingsDep,
) -> FileResponse:
    """The refused bytes as they arrived (admins only). Untrusted: open with care."""
    sha = sha256.lower()
    entry = _entry_or_404(_store(settings), sha, db, request, admin, "quarantine_download")
    _audit(db, request, admin, 200, "quarantine_download", f"{sha} ({entry.size} bytes)")
    headers: dict[str, Any] = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    return FileResponse(entry.path, media_type="application/dicom", filename=f"{sha}.dcm",
                        content_disposition_type="attachment", headers=headers)


@router.delete("/{sha256}", status_code=status.HTTP_204_NO_CONTENT,
               responses={404: {"description": "Not in quarantine"}})
def delete_quarantine(
    sha256: Sha256, request: Request, db: SessionDep, admin: AdminUser, settings: SettingsDep,
) -> None:
    """Remove one quarantined file and its metadata (admins only)."""
    sha = sha256.lower()
    store = _store(settings)
    if not store.delete(sha):
        raise _not_found(sha, db, request, admin, "quarantine_delete")
    _audit(db, request, admin, 204, "quarantine_delete", sha)
