"""Inference jobs from the API's side: submit to Dask, follow progress, record the outcome.

:class:`InferenceRunner` holds one Dask client, made on the first job (an API
that never runs inference starts no cluster): the platform's cluster
(:func:`neuronova_lib.compute.platform_client`: the scheduler ``up`` runs, or
``NEURONOVA_DASK_SCHEDULER``), otherwise (``NEURONOVA_DASK_ENABLED=false``) a
``LocalCluster`` of one worker process. Each job is one task,
:func:`neuronova_lib.ai.inference.run_inference`, submitted with Dask
``retries`` (``NEURONOVA_INFERENCE_RETRIES``); on the local cluster the same
number bounds how often a task may take its worker down with it
(``distributed.scheduler.allowed-failures``; on the platform's cluster, its
scheduler's own setting, Dask's default 3), after which Dask raises
``KilledWorker``. A thread per job waits for the result at most
``NEURONOVA_INFERENCE_TIMEOUT`` seconds, then cancels the task and fails the
job: a killed or stuck worker fails a job, it never hangs it.

Progress: the task logs an event per stage on the Dask topic
:data:`~neuronova_lib.ai.inference.TOPIC`; the runner's subscription appends
each one to the job row's ``stages``, which ``GET /api/inference/{id}/events``
streams to the dashboards.

A job left ``queued`` or ``running`` by an API that stopped is failed when the
API starts again (its study-scoped token has expired by then): ask again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from neuronova_lib.ai.inference import TOPIC, InferenceTask, run_inference
from neuronova_lib.compute import platform_client, scheduler_address
from neuronova_lib.config import Settings
from neuronova_lib.db.models import AuditRecord, InferenceJob

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
FINAL = frozenset({DONE, FAILED})


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class InferenceRunner:
    """Submits inference jobs to Dask and writes what becomes of them to their rows."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        self._client: Any = None
        self._stopping = threading.Event()
        #: Serialises "find the job for this study and model, or add one".
        self.create_lock = threading.Lock()

    # -- life cycle ------------------------------------------------------------
    def start(self) -> None:
        """Fail the jobs an earlier API process left unfinished (their tokens are gone)."""
        with self.sessions() as db:
            stale = db.scalars(select(InferenceJob).where(
                InferenceJob.state.in_((QUEUED, RUNNING)))).all()
            for job in stale:
                self._fail_row(db, job, "api_restarted", "the API restarted while the job was "
                               f"{job.state}; ask for the analysis again")
            db.commit()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._client = None
            self._stack.close()

    def client(self) -> Any:
        """The Dask client, made on first use (see the module docstring)."""
        with self._lock:
            if self._client is None:
                import dask
                from distributed import Client, LocalCluster

                # Clients are closed, not used as context managers: ``with Client`` binds
                # it to the starting thread's context, and the API stops in another one.
                if scheduler_address(self.settings):
                    # The platform's cluster: the one `up` runs (its scheduler has the
                    # allowed-failures of NEURONOVA_INFERENCE_RETRIES) or an existing one.
                    self._client = platform_client(self.settings)
                else:
                    # As neuronova_lib.bulk.runner.local_client: non-daemonic workers (the
                    # ingest gate starts a checker process), no profiler; and a worker that
                    # dies with the task counts as a failure of the task. In force for the
                    # cluster's life, so that a restarted worker gets it too.
                    self._stack.enter_context(dask.config.set({
                        "distributed.worker.profile.enabled": False,
                        "distributed.worker.daemon": False,
                        "distributed.scheduler.allowed-failures":
                            int(self.settings.inference_retries)}))
                    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                           dashboard_address=":0")
                    self._stack.callback(cluster.close)
                    self._client = Client(cluster, set_as_default=False)
                self._stack.callback(self._client.close)
                self._client.subscribe_topic(TOPIC, self._on_event)
            return self._client

    # -- jobs -------------------------------------------------------------------
    def submit(self, task: InferenceTask) -> None:
        """Run ``task`` (its row is committed ``queued``); a thread waits for the end."""
        threading.Thread(target=self._follow, args=(task,), name=f"inference-{task.job_id[:8]}",
                         daemon=True).start()

    def _follow(self, task: InferenceTask) -> None:
        from distributed import TimeoutError as DaskTimeout
        from distributed.scheduler import KilledWorker

        job_id = task.job_id
        timeout = float(self.settings.inference_timeout)
        future = None
        try:
            client = self.client()
            future = client.submit(run_inference, task, key=f"inference-{job_id}", pure=False,
                                   retries=int(self.settings.inference_retries))
            result = future.result(timeout=timeout)
        except (DaskTimeout, TimeoutError):
            if future is not None:
                future.cancel()
            self.finish(job_id, {"ok": False, "reason": "timeout", "message":
                                 f"the job did not finish in {timeout:g} s "
                                 "(NEURONOVA_INFERENCE_TIMEOUT); it was cancelled"})
            return
        except KilledWorker as exc:
            self.finish(job_id, {"ok": False, "reason": "worker_died", "message":
                                 "the Dask worker running the job died "
                                 f"{int(self.settings.inference_retries) + 1} time(s): {exc}"})
            return
        except Exception as exc:  # noqa: BLE001 - recorded on the job, for the user
            if self._stopping.is_set():
                return
            log.exception("inference job %s failed", job_id)
            self.finish(job_id, {"ok": False, "reason": "error",
                                 "message": f"{type(exc).__name__}: {exc}"})
            return
        self.finish(job_id, result)

    def _on_event(self, event: Any) -> None:
        """A progress event from a worker: appended to the job's stages (runs in Dask's loop)."""
        try:
            _, message = event
            job_id = str(message["job"])
            with self.sessions() as db:
                job = db.get(InferenceJob, job_id)
                if job is None or job.state in FINAL:
                    return
                stages = json.loads(job.stages or "[]")
                stages.append({k: v for k, v in message.items() if k != "job"})
                job.stages = json.dumps(stages)
                now = utcnow()
                if job.state == QUEUED:
                    job.state, job.started_at = RUNNING, now
                job.updated_at = now
                db.commit()
        except Exception:  # noqa: BLE001 - a lost progress event must not break Dask's loop
            log.exception("inference progress event not recorded: %r", event)

    def finish(self, job_id: str, result: dict[str, Any]) -> None:
        """Write the task's result to the job row, with an audit record."""
        with self.sessions() as db:
            job = db.get(InferenceJob, job_id)
            if job is None:
                return
            job.timings = json.dumps(result.get("timings") or {})
            if result.get("ok"):
                now = utcnow()
                job.state, job.updated_at, job.finished_at = DONE, now, now
                job.volumes = json.dumps({"volumes_ml": result["volumes_ml"],
                                          "voxel_counts": result["voxel_counts"],
                                          "voxel_ml": result["voxel_ml"],
                                          "notes": result.get("notes", [])})
                job.source_series = json.dumps({"reference": result["reference_series"],
                                                "channels": result["source_series"]})
                job.seg_series_uid = result["seg"]["series_uid"]
                job.seg_sop_uid = result["seg"]["sop_uid"]
                job.sr_series_uid = result["sr"]["series_uid"]
                job.sr_sop_uid = result["sr"]["sop_uid"]
                job.error = None
                detail = ", ".join(f"{k} {v:g} ml" for k, v in result["volumes_ml"].items())
                self._audit(db, job, "allow", 200, "inference_done", detail)
                stages = json.loads(job.stages or "[]")
                if not stages or stages[-1].get("stage") != "finished":
                    stages.append({"stage": "finished", "status": "done"})
                    job.stages = json.dumps(stages)
            else:
                self._fail_row(db, job, str(result.get("reason") or "error"),
                               str(result.get("message") or "failed"))
            db.commit()
        log.info("inference job %s: %s", job_id, "done" if result.get("ok") else result)

    def _fail_row(self, db: Session, job: InferenceJob, reason: str, message: str) -> None:
        now = utcnow()
        job.state, job.updated_at, job.finished_at = FAILED, now, now
        job.error = f"{reason}: {message}"
        stages = json.loads(job.stages or "[]")
        if not stages or stages[-1].get("stage") != "failed":
            stages.append({"stage": "failed", "status": "failed", "reason": reason,
                           "message": message})
        job.stages = json.dumps(stages)
        refused = reason == "access_refused"  # the guard said no to the user's own access
        self._audit(db, job, "deny" if refused else "allow", 403 if refused else 500,
                    "inference_failed", job.error)

    @staticmethod
    def _audit(db: Session, job: InferenceJob, decision: str, status: int, reason: str,
               detail: str) -> None:
        db.add(AuditRecord(
            service="api", username=job.created_by, role=job.role, method="JOB",
            path=f"/api/inference/{job.id}", study=job.study_uid, decision=decision,
            status=status, reason=reason, detail=detail[:4000],
        ))
