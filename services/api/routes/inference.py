"""Inference jobs (clinicians, scientists, admins): tumour segmentation of a study.

``POST /api/inference {"study": UID}`` answers at once with a job id; the job
runs on Dask (:mod:`services.api.inference_runner`,
:func:`neuronova_lib.ai.inference.run_inference`) and writes a DICOM SEG and an
SR TID 1500 into the study through the ingest gate. A second request for the
same study and the same served model version returns the job that exists
(queued, running or done) unless ``"rerun": true``; a failed job is never
returned in place of a new one.

``GET /api/inference`` lists jobs, newest first (``?study=`` one study's, ``?mine=true``
the caller's own: the dashboards' notifications).
``GET /api/inference/{id}`` is the job (state, model, timings, volumes, result
UIDs, the reason of a failure); ``GET /api/inference/{id}/events`` streams its
progress as Server-Sent Events: one ``stage`` event per stage start and end,
then one ``done`` or ``failed`` event with the job, and the stream ends.

The demo model is trained on synthetic data: every job view says it is not for
clinical use.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from neuronova_lib.ai.inference import InferenceError, InferenceTask, resolve_model
from neuronova_lib.ai.results import NOT_FOR_CLINICAL_USE
from neuronova_lib.db.models import InferenceJob, User
from neuronova_lib.orthanc_store import OrthancStore
from neuronova_lib.security.roles import INFERENCE_REQUESTERS, Role
from neuronova_lib.uids import valid_uid

from ..auditing import write_audit
from ..deps import AccessClaims, SessionDep, SettingsDep, TokenServiceDep, require_roles
from ..inference_runner import FAILED, FINAL, QUEUED, InferenceRunner
from .jobs import _utc

router = APIRouter(prefix="/inference", tags=["inference"])

Requester = Annotated[User, Depends(require_roles(*sorted(INFERENCE_REQUESTERS)))]
Reader = Annotated[User, Depends(require_roles(Role.clinician, Role.scientist, Role.model_owner,
                                               Role.admin))]
#: How often the event stream looks at the job row, and sends a keep-alive comment.
POLL_S = 0.25
KEEPALIVE_S = 15.0


class InferenceRequest(BaseModel):
    study: str = Field(description="StudyInstanceUID of the study to analyse.")
    rerun: bool = Field(default=False, description="Run again even if this study was analysed "
                        "by the served model version already.")


class ModelView(BaseModel):
    name: str
    version: str | None
    run_id: str | None
    uri: str


class ResultRef(BaseModel):
    series_uid: str
    sop_uid: str


class InferenceJobView(BaseModel):
    job_id: str
    state: str = Field(description="queued, running, done or failed.")
    existing: bool = Field(default=False, description="POST only: this job existed already "
                           "for the study and model version (ask with rerun to run again).")
    status_url: str
    events_url: str
    study: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    model: ModelView
    stages: list[dict[str, Any]] = Field(default_factory=list,
                                         description="Progress events in order.")
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage.")
    volumes_ml: dict[str, float] | None = Field(default=None, description="TC, WT, ET.")
    voxel_counts: dict[str, int] | None = None
    seg: ResultRef | None = None
    sr: ResultRef | None = None
    source_series: dict[str, Any] | None = None
    notes: list[str] = Field(default_factory=list)
    error: str | None = Field(default=None, description="reason: message, for a failed job.")
    not_for_clinical_use: str = NOT_FOR_CLINICAL_USE


def job_view(job: InferenceJob, *, existing: bool = False) -> InferenceJobView:
    volumes = json.loads(job.volumes) if job.volumes else {}
    return InferenceJobView(
        job_id=job.id, state=job.state, existing=existing,
        status_url=f"/api/inference/{job.id}", events_url=f"/api/inference/{job.id}/events",
        study=job.study_uid, created_by=job.created_by,
        created_at=_utc(job.created_at), updated_at=_utc(job.updated_at),  # type: ignore[arg-type]
        started_at=_utc(job.started_at), finished_at=_utc(job.finished_at),
        model=ModelView(name=job.model_name, version=job.model_version,
                        run_id=job.model_run_id, uri=job.model_uri),
        stages=json.loads(job.stages or "[]"),
        timings=json.loads(job.timings) if job.timings else {},
        volumes_ml=volumes.get("volumes_ml"), voxel_counts=volumes.get("voxel_counts"),
        seg=ResultRef(series_uid=job.seg_series_uid, sop_uid=job.seg_sop_uid)
        if job.seg_sop_uid and job.seg_series_uid else None,
        sr=ResultRef(series_uid=job.sr_series_uid, sop_uid=job.sr_sop_uid)
        if job.sr_sop_uid and job.sr_series_uid else None,
        source_series=json.loads(job.source_series) if job.source_series else None,
        notes=volumes.get("notes", []), error=job.error,
    )


def _runner(request: Request) -> InferenceRunner:
    runner: InferenceRunner = request.app.state.inference
    return runner


@router.post("", response_model=InferenceJobView, status_code=status.HTTP_202_ACCEPTED,
             responses={200: {"description": "The job that exists for this study and model"},
                        404: {"description": "No such study"},
                        503: {"description": "No model is served"}})
def request_inference(body: InferenceRequest, request: Request, response: Response,
                      db: SessionDep, user: Requester, claims: AccessClaims,
                      settings: SettingsDep, tokens: TokenServiceDep) -> InferenceJobView:
    """Analyse a study with the served model; a job id at once (202), or the existing job (200)."""
    def refuse(code: int, reason: str, detail: str) -> HTTPException:
        write_audit(db, request, decision="deny", status=code, reason=reason,
                    username=user.username, role=user.role, detail=detail,
                    study=body.study if valid_uid(body.study) else None)
        db.commit()
        return HTTPException(code, detail=detail)

    if not valid_uid(body.study):
        raise refuse(422, "invalid_uid", f"study {body.study[:80]!r} is not a DICOM UID")
    if OrthancStore.from_settings(settings).find_study(body.study) is None:
        raise refuse(404, "no_study", f"study {body.study} is not in the archive")
    try:
        model = resolve_model(settings)
    except InferenceError as exc:
        raise refuse(503, exc.reason, exc.message) from None
    runner = _runner(request)
    with runner.create_lock:
        if not body.rerun:
            existing = db.scalars(
                select(InferenceJob).where(
                    InferenceJob.study_uid == body.study, InferenceJob.model_name == model.name,
                    InferenceJob.model_version.is_(None) if model.version is None
                    else InferenceJob.model_version == model.version,
                    InferenceJob.model_run_id.is_(None) if model.run_id is None
                    else InferenceJob.model_run_id == model.run_id,
                    InferenceJob.state != FAILED,
                ).order_by(InferenceJob.created_at.desc()).limit(1)
            ).first()
            if existing is not None:
                write_audit(db, request, decision="allow", status=200,
                            reason="inference_existing", username=user.username,
                            role=user.role, study=body.study, detail=f"job {existing.id}")
                db.commit()
                response.status_code = status.HTTP_200_OK
                return job_view(existing, existing=True)
        now = datetime.now(UTC)
        job = InferenceJob(
            id=uuid.uuid4().hex, state=QUEUED, created_by=user.username, role=user.role,
            study_uid=body.study, model_name=model.name, model_version=model.version,
            model_run_id=model.run_id, model_uri=model.uri, rerun=body.rerun,
            created_at=now, updated_at=now, stages=json.dumps([{"stage": "queued",
                                                                "status": "done"}]),
        )
        db.add(job)
        write_audit(db, request, decision="allow", status=202, reason="inference_requested",
                    username=user.username, role=user.role, study=body.study,
                    detail=f"job {job.id} model {model.name} v{model.version} run {model.run_id}"
                    + (" (rerun)" if body.rerun else ""), token_id=claims.jti)
        db.commit()
        db.refresh(job)
    # The job reads the study with the user's own access: a signed token for this study
    # only, revoked with the access token that asked for it (as /api/pacs/sign does).
    token, _ = tokens.mint(user.username, user.role, "signed",
                           float(settings.inference_timeout) + 60, studies=[body.study],
                           parent=claims.jti)
    runner.submit(InferenceTask.for_settings(
        settings, job_id=job.id, study_uid=body.study, username=user.username,
        created=now, model=model, token=token))
    return job_view(job)


@router.get("", response_model=list[InferenceJobView])
def list_inference_jobs(
    db: SessionDep, user: Reader,
    study: Annotated[str | None, Query(description="Only this study's jobs.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    mine: Annotated[bool, Query(description="Only the jobs the caller requested (the "
                                "dashboards' notifications).")] = False,
) -> list[InferenceJobView]:
    """The most recent inference jobs first."""
    query = select(InferenceJob).order_by(InferenceJob.created_at.desc()).limit(limit)
    if study:
        query = query.where(InferenceJob.study_uid == study)
    if mine:
        query = query.where(InferenceJob.created_by == user.username)
    return [job_view(job) for job in db.scalars(query).all()]


def _job_or_404(db: Any, job_id: str) -> InferenceJob:
    job = db.get(InferenceJob, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no inference job {job_id!r}")
    return job


@router.get("/{job_id}", response_model=InferenceJobView,
            responses={404: {"description": "No such job"}})
def read_inference_job(job_id: str, db: SessionDep, user: Reader) -> InferenceJobView:
    """One job: state, model, stages, timings, volumes, the SEG and SR UIDs, or why it failed."""
    return job_view(_job_or_404(db, job_id))


@router.get("/{job_id}/events", responses={
    200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
    404: {"description": "No such job"}})
async def inference_events(job_id: str, request: Request, user: Reader) -> StreamingResponse:
    """Progress as Server-Sent Events: ``stage`` events, then ``done`` or ``failed``, then the end.

    Every event has an ``id`` (its index), so a client that reconnects with
    ``Last-Event-ID`` gets only what it missed.
    """
    sessions = request.app.state.sessions

    def read() -> tuple[str, list[dict[str, Any]], InferenceJobView] | None:
        with sessions() as db:
            job = db.get(InferenceJob, job_id)
            if job is None:
                return None
            view = job_view(job)
            return job.state, view.stages, view

    first = await run_in_threadpool(read)
    if first is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no inference job {job_id!r}")
    try:
        sent = int(request.headers.get("last-event-id", "-1")) + 1
    except ValueError:
        sent = 0

    async def stream() -> AsyncIterator[str]:
        nonlocal sent
        snapshot = first
        idle = 0.0
        while True:
            state, stages, view = snapshot
            for index in range(sent, len(stages)):
                yield f"id: {index}\nevent: stage\ndata: {json.dumps(stages[index])}\n\n"
                idle = 0.0
            sent = max(sent, len(stages))
            if state in FINAL:
                yield f"event: {state}\ndata: {view.model_dump_json()}\n\n"
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_S)
            idle += POLL_S
            if idle >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                idle = 0.0
            latest = await run_in_threadpool(read)
            if latest is None:
                return
            snapshot = latest

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
