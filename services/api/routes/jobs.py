"""Background jobs (admins): how an upload's transcoding went."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from neuronova_lib.db.models import Job

from ..deps import AdminUser, SessionDep
from ..jobs import report_rows

router = APIRouter(prefix="/jobs", tags=["jobs"])


class JobFailure(BaseModel):
    file: str = Field(description="The file, relative to the upload (zip members under "
                      "the zip's folder).")
    reason: str | None
    message: str | None
    sop_instance_uid: str | None = None
    quarantine_sha256: str | None = Field(
        default=None, description="Where the refused file is kept: "
        "GET /api/ingest/quarantine/{sha256}.")


class JobView(BaseModel):
    job_id: str
    kind: str
    state: str = Field(description="queued, running, done (the run finished; some "
                       "instances may have failed: see counts) or failed (the run itself did not).")
    status_url: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    files: int = Field(description="Files received, zip members included.")
    bytes: int = Field(description="Bytes received, zips expanded.")
    counts: dict[str, int] = Field(
        default_factory=dict, description="Instances by outcome: done, failed, skipped, pending."
    )
    failure_reasons: dict[str, int] = Field(default_factory=dict)
    skip_reasons: dict[str, int] = Field(default_factory=dict)
    summary: str | None = Field(default=None, description="The bulk run's one-line summary.")
    report: str | None = Field(default=None, description="Path of the JSON report on the server.")
    error: str | None = None
    failures: list[JobFailure] | None = Field(
        default=None, description="Failed instances with their reasons (first 200; the report "
        "has all); only in GET /api/jobs/{id}."
    )
    skipped: list[JobFailure] | None = Field(
        default=None, description="Files that are not images to transcode (not DICOM, already "
        "HTJ2K, no pixel data), with the reason; only in GET /api/jobs/{id}."
    )


def _utc(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; every time the platform stores is UTC.
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def job_view(job: Job, *, with_failures: bool = False) -> JobView:
    """The public view of a job row."""
    summary: dict[str, Any] = json.loads(job.summary) if job.summary else {}
    counts = summary.get("counts") or {}
    view = JobView(
        job_id=job.id, kind=job.kind, state=job.state, status_url=f"/api/jobs/{job.id}",
        created_by=job.created_by, created_at=_utc(job.created_at),  # type: ignore[arg-type]
        updated_at=_utc(job.updated_at),  # type: ignore[arg-type]
        started_at=_utc(job.started_at), finished_at=_utc(job.finished_at),
        files=job.file_count, bytes=job.bytes,
        counts={k: int(counts.get(k, 0)) for k in ("done", "failed", "skipped", "pending")}
        if counts else {},
        failure_reasons=summary.get("failure_reasons") or {},
        skip_reasons=summary.get("skip_reasons") or {},
        summary=summary.get("line"), report=job.report_path, error=job.error,
    )
    if with_failures:
        rows = report_rows(job)
        view.failures = [JobFailure(**f) for f in rows["failures"]]
        view.skipped = [JobFailure(**f) for f in rows["skipped"]]
    return view


@router.get("", response_model=list[JobView])
def list_jobs(
    db: SessionDep, admin: AdminUser,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    state: Annotated[str | None, Query(pattern="^(queued|running|done|failed)$")] = None,
) -> list[JobView]:
    """The most recent jobs first (admins only)."""
    query = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if state:
        query = query.where(Job.state == state)
    return [job_view(job) for job in db.scalars(query).all()]


@router.get("/{job_id}", response_model=JobView, responses={404: {"description": "No such job"}})
def read_job(job_id: str, db: SessionDep, admin: AdminUser) -> JobView:
    """One job: state, counts, failures with their reasons, timestamps (admins only)."""
    job = db.get(Job, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job {job_id!r}")
    return job_view(job, with_failures=True)
