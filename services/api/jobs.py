"""Background jobs of the API: uploads handed to the bulk transcoder on the Dask cluster.

The upload route saves the files, adds a ``queued``
:class:`~neuronova_lib.db.models.Job` row and calls :meth:`JobRunner.submit`.
Up to ``NEURONOVA_JOB_CONCURRENCY`` jobs run at once, each driven by a thread
of the API that submits the job's instances to the platform's Dask cluster
(:func:`neuronova_lib.compute.scheduler_for_run`: ``NEURONOVA_DASK_SCHEDULER``,
or the scheduler ``up`` runs) and records the outcome on the row
(``running`` → ``done`` or ``failed``) and in an audit record. The work
itself (reading, the ingest gate, transcoding, storing) runs on the Dask
workers, never in the API process; requests are never blocked: they only read
the row.

Every uploaded file passes the ingest gate on the Dask worker before it is
parsed; a refused file (any gate reason, ``not_dicom`` included, or a SOP
Instance UID that Orthanc holds as a different instance) is a failure of the
job and is kept in the quarantine with route ``upload`` and the uploading
admin as sender.

Without a cluster (``NEURONOVA_DASK_ENABLED=false`` and no scheduler, as in
tests that need no Dask) each job starts its own ``LocalCluster`` with one
worker process, and jobs run one at a time. On a cluster the platform did
not start, the workers must reach the data dir (the upload folder) and
Orthanc; a run checks that first and fails the job with what to do.

Each job has its own manifest and report in ``<upload dir>/.job/`` (names that
start with ``.`` are not read as instances), so a job started again after a
restart picks up where it stopped: instances already stored are not sent twice.
When the API starts, jobs a previous process left ``running`` are queued again.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from neuronova_lib.config import Settings
from neuronova_lib.db.models import AuditRecord, Job

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
#: Most failures copied from the report into a job's answer (the report has them all).
MAX_FAILURES = 200
_STOP = object()


def uploads_dir(settings: Settings) -> Path:
    """``$NEURONOVA_HOME/uploads``: one folder per upload job."""
    return settings.home / "uploads"


def job_dir(settings: Settings, job_id: str) -> Path:
    """The folder of one upload job; its files are what the job transcodes."""
    return uploads_dir(settings) / job_id


def work_dir(settings: Settings, job_id: str) -> Path:
    """``<job dir>/.job``: the job's manifest, report and backups (not read as instances)."""
    return job_dir(settings, job_id) / ".job"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def report_rows(job: Job, limit: int = MAX_FAILURES) -> dict[str, list[dict[str, Any]]]:
    """The failed and the skipped instances of a finished job with their reasons.

    Read from the job's JSON report: ``{"failures": [...], "skipped": [...]}``,
    each entry with ``file`` (relative to the upload folder), ``reason``,
    ``message``, ``sop_instance_uid`` and ``quarantine_sha256`` (the quarantine
    entry of a refused file, else ``None``); at most ``limit`` of each.
    """
    rows: dict[str, list[dict[str, Any]]] = {"failures": [], "skipped": []}
    if not job.report_path:
        return rows
    try:
        with open(job.report_path, encoding="utf-8") as handle:
            report = json.load(handle)
    except (OSError, ValueError):
        return rows
    root = Path(job.report_path).parent.parent
    for name, out in rows.items():
        for row in report.get(name, [])[:limit]:
            out.append({
                "file": _relative(row.get("locator") or "", root),
                "reason": row.get("reason"),
                "message": row.get("message"),
                "sop_instance_uid": row.get("sop_instance_uid"),
                "quarantine_sha256": row.get("quarantine_sha256"),
            })
    return rows


def _relative(locator: str, root: Path) -> str:
    try:
        return str(Path(locator).relative_to(root))
    except ValueError:
        return locator


class JobRunner:
    """Runs queued jobs, several at once, on the platform's Dask cluster.

    Parameters
    ----------
    settings : Settings
    sessions : sessionmaker
        Sessions of the platform database (each job's thread opens its own).
    """

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self._queue: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    # -- life cycle ------------------------------------------------------------

    def start(self) -> None:
        """Queue the jobs left unfinished by an earlier process, then start the dispatcher."""
        with self.sessions() as db:
            stale = db.scalars(select(Job).where(Job.state == RUNNING)).all()
            for job in stale:
                log.warning("job %s was running when the API stopped: queued again", job.id)
                job.state, job.updated_at = QUEUED, utcnow()
            db.commit()
            pending = db.scalars(
                select(Job.id).where(Job.state == QUEUED).order_by(Job.created_at)
            ).all()
        for job_id in pending:
            self._queue.put(job_id)
        self._thread = threading.Thread(target=self._dispatch, name="api-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask running jobs to stop after the batches in flight, and end the threads.

        A job stopped this way goes back to ``queued``; the next start resumes it.
        """
        self._stop.set()
        self._queue.put(_STOP)
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            threads = list(self._running.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def submit(self, job_id: str) -> None:
        """Queue a job whose row is already committed as ``queued``."""
        self._queue.put(job_id)

    @property
    def scheduler(self) -> str | None:
        """The Dask scheduler jobs go to now; ``None``: a local cluster per job."""
        from neuronova_lib.compute import scheduler_for_run

        return scheduler_for_run(self.settings)

    # -- the threads -----------------------------------------------------------

    def _dispatch(self) -> None:
        """Start each queued job in a thread of its own, at most ``job_concurrency`` at once
        (one at a time when each job would start a local cluster of its own)."""
        while not self._stop.is_set():
            job_id = self._queue.get()
            if job_id is _STOP:
                return
            scheduler = self.scheduler
            limit = self.settings.job_concurrency if scheduler else 1
            while not self._stop.is_set():
                with self._lock:
                    if len(self._running) < limit and job_id not in self._running:
                        thread = threading.Thread(target=self._run_guarded,
                                                  args=(job_id, scheduler),
                                                  name=f"api-job-{job_id[:8]}", daemon=True)
                        self._running[job_id] = thread
                        thread.start()
                        break
                self._stop.wait(0.1)

    def _run_guarded(self, job_id: str, scheduler: str | None) -> None:
        try:
            self._run_job(job_id, scheduler)
        except Exception:  # noqa: BLE001 - the runner must outlive any one job
            log.exception("job %s: could not be run", job_id)
        finally:
            with self._lock:
                self._running.pop(job_id, None)

    def _run_job(self, job_id: str, scheduler: str | None) -> None:
        from neuronova_lib.bulk import transcode_sources

        with self.sessions() as db:
            job = db.get(Job, job_id)
            if job is None or job.state != QUEUED:
                return
            job.state, job.started_at, job.updated_at = RUNNING, utcnow(), utcnow()
            sender = job.created_by
            db.commit()
        folder = job_dir(self.settings, job_id)
        work = work_dir(self.settings, job_id)
        log.info("job %s: transcoding %s on %s", job_id, folder, scheduler or "a local cluster")
        try:
            summary = transcode_sources(
                [str(folder)], settings=self.settings, scheduler=scheduler,
                workers=None if scheduler else 1,
                manifest_path=work / "manifest.db", report_path=work / "report.json",
                backup_dir=work / "backup", route="upload", sender=sender, progress=False,
                stop=self._stop,
            )
        except Exception as exc:  # noqa: BLE001 - recorded on the job, for the admin
            log.exception("job %s failed", job_id)
            self._finish(job_id, FAILED, error=f"{type(exc).__name__}: {exc}")
            return
        data = {
            "status": summary.status, "exit_code": summary.exit_code,
            "counts": summary.counts, "this_run": summary.this_run,
            "failure_reasons": summary.failure_reasons, "skip_reasons": summary.skip_reasons,
            "timings": summary.timings, "line": summary.line(),
            "scheduler": summary.scheduler, "dashboard": summary.dashboard,
        }
        if summary.exit_code in (0, 1):
            self._finish(job_id, DONE, summary=data, report=summary.report)
        elif self._stop.is_set():  # the API is stopping: the next start resumes the job
            with self.sessions() as db:
                job = db.get(Job, job_id)
                if job is not None:
                    job.state, job.updated_at = QUEUED, utcnow()
                    job.summary, job.report_path = json.dumps(data), summary.report
                    db.commit()
        else:
            self._finish(job_id, FAILED, summary=data, report=summary.report,
                         error=f"the run ended {summary.status}: {summary.line()}")

    def _finish(self, job_id: str, state: str, *, summary: dict[str, Any] | None = None,
                report: str | None = None, error: str | None = None) -> None:
        with self.sessions() as db:
            job = db.get(Job, job_id)
            if job is None:
                return
            now = utcnow()
            job.state, job.updated_at, job.finished_at = state, now, now
            job.summary = json.dumps(summary) if summary is not None else job.summary
            job.report_path = report or job.report_path
            job.error = error
            detail = (summary or {}).get("line") or error or state
            db.add(AuditRecord(
                service="api", username=job.created_by, role=None, method="JOB",
                path=f"/api/jobs/{job_id}", decision="allow",
                status=200 if state == DONE else 500,
                reason=f"upload_{state}", detail=str(detail)[:4000],
            ))
            db.commit()
        log.info("job %s %s: %s", job_id, state, detail)


def discard_upload(settings: Settings, job_id: str) -> None:
    """Remove the folder of an upload that was refused before it became a job."""
    shutil.rmtree(job_dir(settings, job_id), ignore_errors=True)
