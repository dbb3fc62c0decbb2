"""Inference jobs: a study in, a DICOM SEG and an SR TID 1500 out, on a Dask worker.

:func:`run_inference` is the Dask task. Stages, each timed and reported as a
progress event (``distributed.Worker.log_event`` on topic :data:`TOPIC`, which
the API turns into the job's Server-Sent Events):

1. ``load`` — the study through the platform's DICOMweb with the *requesting
   user's* access: a short-lived signed token scoped to this one study, minted
   for that user (as ``/api/pacs/sign`` does), so the guard decides what the
   job may read exactly as it would for the user. The four channels are
   classified by SeriesDescription (:mod:`neuronova_lib.dicomweb.brats`); a
   missing one fails the job and names it.
2. ``model`` — the served model (:func:`load_segmenter`, cached per worker process).
3. ``preprocess`` — the channels on one grid (the T1 series', or the model's
   spacing when its config asks for one).
4. ``predict`` — ``segmenter(channels, spacing=...)`` → bool (3, X, Y, Z): TC, WT, ET.
5. ``postprocess`` — the masks back on the T1 series' grid (nearest neighbour).
6. ``write`` — SEG and SR (:mod:`neuronova_lib.ai.results`).
7. ``store`` — both through the ingest gate and the ingest core (the same
   checks and UID rules as every upload, route ``inference``), SEG first.

The study is only ever added to: nothing is changed or deleted, and the ingest
core refuses a result whose UIDs clash with anything stored. UIDs come from
the job id, so a retried task writes the same objects again (stored as "same
instance", not as a conflict).

Failures the user can act on (a missing channel, no access, a model that
cannot be loaded, a refused result) end the task with ``ok: False`` and a
reason, without Dask retries; an unexpected error or a worker that dies is
retried by Dask (``NEURONOVA_INFERENCE_RETRIES``) and bounded by the job's
timeout on the API side, so a job never hangs.

Where the served model comes from is in two functions, :func:`resolve_model`
(which version is served: the champion the promotion gate approved, see
:mod:`neuronova_lib.ai.registry`) and :func:`load_segmenter` (load it as a
:class:`neuronova_lib.ai.predict.Segmenter`, checked against the approval).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from neuronova_lib.ingest.sandbox import GateConfig
from neuronova_lib.reasons import Reason

from .model_config import CHANNELS
from .results import NOT_FOR_CLINICAL_USE, REGIONS, ModelInfo, build_results, to_bytes

logger = logging.getLogger(__name__)

#: Dask event topic of the jobs' progress.
TOPIC = "neuronova-inference"
#: The stages, in order (the event stream and the timings use these names).
STAGES = ("load", "model", "preprocess", "predict", "postprocess", "write", "store")
#: The model config's channel names → the platform's (``t1ce`` is BraTS' file suffix).
_CHANNEL_ALIASES = {"t1ce": "t1c", "t1gd": "t1c", "t1c": "t1c", "t1": "t1", "t2": "t2",
                    "flair": "flair"}


class InferenceError(Exception):
    """A job failure with a reason code and a message the user can act on."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


# ------------------------------------------------------------------------ the served model

class Segmenter(Protocol):
    """What a job runs (``neuronova_lib.ai.predict.Segmenter`` in full)."""

    model_uri: str
    run_id: str | None
    config: Mapping[str, Any]

    def __call__(self, channels: np.ndarray, *, spacing: tuple[float, float, float]) -> np.ndarray:
        ...


@dataclass(frozen=True)
class ServedModel:
    """Which model a job runs: the registry's name, version and run, and where to load it."""

    name: str
    version: str | None
    run_id: str | None
    uri: str
    tracking_uri: str | None = None
    #: sha256 of the model's files as the promotion gate approved them; the files a worker
    #: downloads must match it (``None``: an approval recorded without one).
    artifact_sha256: str | None = None

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.name, self.version, self.run_id)


def resolve_model(settings: Any) -> ServedModel:
    """The model inference serves now: the champion that carries the promotion gate's approval.

    :func:`neuronova_lib.ai.registry.served_version` resolves the ``champion``
    alias and serves it only if the platform's newest approval names that very
    version: an alias moved in the MLflow UI or through its REST API is never
    served. The answer is pinned by version (``models:/NAME/VERSION``), so an
    alias moved while the job waits cannot change what it loads.

    Raises
    ------
    InferenceError
        ``model_unavailable``: nothing registered, no approved champion, or MLflow down
        (the message says what to do).
    """
    from .registry import RegistryError, served_version, tracking_uri

    try:
        served = served_version(settings, settings.model_name)
    except RegistryError as exc:
        raise InferenceError("model_unavailable", str(exc)) from None
    return ServedModel(served.name or settings.model_name, str(served.version), served.run_id,
                       served.model_uri, tracking_uri(settings), served.artifact_sha256)


_models_lock = threading.Lock()
_models: dict[tuple[str, str | None, str | None], Any] = {}


def load_segmenter(model: ServedModel) -> Segmenter:
    """The network of ``model``, loaded once per process (a worker serves many jobs),
    and only if its files are the ones the promotion gate approved.

    Raises
    ------
    InferenceError
        ``model_unavailable`` with MLflow's or PyTorch's reason.
    """
    from .predict import ModelFilesChanged
    from .predict import Segmenter as ModelSegmenter

    key = (model.uri, model.tracking_uri, model.artifact_sha256)
    with _models_lock:
        if key not in _models:
            try:
                _models[key] = ModelSegmenter.from_mlflow(model.uri, model.tracking_uri,
                                                          model.artifact_sha256)
            except ModelFilesChanged as exc:
                raise InferenceError("model_unavailable", str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - any failure to load is the same to a user
                raise InferenceError(
                    "model_unavailable", f"the model {model.name} "
                    f"{'v' + model.version if model.version else ''} ({model.uri}) could not be "
                    f"loaded: {type(exc).__name__}: {exc}") from None
        return _models[key]  # type: ignore[no-any-return]


def resolve_segmenter(settings: Any) -> Segmenter:
    """The served model, loaded: :func:`load_segmenter` of :func:`resolve_model`."""
    return load_segmenter(resolve_model(settings))


# ------------------------------------------------------------------------ the task

@dataclass(frozen=True)
class InferenceTask:
    """Everything a worker needs for one job (no settings object: workers may have none).

    ``token`` is the study-scoped signed token minted for the requesting user;
    ``orthanc_password`` is the platform's Orthanc service account, used only by
    the ingest core to store the results. Both stay out of ``repr``.
    """

    job_id: str
    study_uid: str
    username: str
    created: dt.datetime
    model: ServedModel
    platform_url: str
    token: str = field(repr=False)
    orthanc_url: str
    orthanc_username: str
    orthanc_password: str = field(repr=False)
    uid_lock_dir: str
    quarantine_dir: str
    quarantine_retention_days: float
    orthanc_wait: float
    gate: GateConfig

    @classmethod
    def for_settings(cls, settings: Any, *, job_id: str, study_uid: str, username: str,
                     created: dt.datetime, model: ServedModel, token: str) -> InferenceTask:
        from neuronova_lib.security.secret_store import orthanc_service_account

        account = orthanc_service_account(settings.secrets_dir)
        return cls(
            job_id=job_id, study_uid=study_uid, username=username, created=created, model=model,
            platform_url=settings.local_url, token=token, orthanc_url=settings.orthanc_url,
            orthanc_username=account["username"], orthanc_password=account["password"],
            uid_lock_dir=str(settings.uid_lock_dir), quarantine_dir=str(settings.quarantine_dir),
            quarantine_retention_days=float(settings.quarantine_retention_days),
            orthanc_wait=float(settings.ingest_orthanc_wait),
            gate=GateConfig.from_settings(settings, workers=1),
        )


ProgressSink = Callable[[dict[str, Any]], None]


def _emit(task: InferenceTask, on_event: ProgressSink | None, **event: Any) -> None:
    event = {"job": task.job_id, "at": time.time(), **event}
    if on_event is not None:
        on_event(event)
        return
    try:
        from distributed import get_worker

        get_worker().log_event(TOPIC, event)
    except ValueError:  # not on a Dask worker: nobody to tell
        logger.info("inference %s: %s", task.job_id, event)


class _Stages:
    """Times each stage and reports its start and end."""

    def __init__(self, task: InferenceTask, on_event: ProgressSink | None) -> None:
        self.task, self.on_event = task, on_event
        self.timings: dict[str, float] = {}

    def run(self, stage: str, fn: Callable[[], Any]) -> Any:
        _emit(self.task, self.on_event, stage=stage, status="started")
        started = time.perf_counter()
        result = fn()
        self.timings[stage] = round(time.perf_counter() - started, 4)
        _emit(self.task, self.on_event, stage=stage, status="done", seconds=self.timings[stage])
        return result


def run_inference(task: InferenceTask, on_event: ProgressSink | None = None) -> dict[str, Any]:
    """The Dask task: run one job start to end (see the module docstring).

    Returns
    -------
    dict
        ``ok`` True: model, timings (s per stage), voxel counts, volumes (ml),
        result UIDs, source series, notes. ``ok`` False: ``reason`` and
        ``message``. Only an unexpected error raises (Dask retries it).
    """
    stages = _Stages(task, on_event)
    try:
        result = _run(task, stages)
    except InferenceError as exc:
        _emit(task, on_event, stage="failed", status="failed", reason=exc.reason,
              message=exc.message)
        return {"ok": False, "reason": exc.reason, "message": exc.message,
                "timings": stages.timings}
    _emit(task, on_event, stage="finished", status="done")
    return result


def _run(task: InferenceTask, stages: _Stages) -> dict[str, Any]:
    from neuronova_lib.dicomweb.session import signed_client

    client = signed_client(task.platform_url, task.token, max_workers=4, timeout=120.0)
    with client:
        volume, sources = stages.run("load", lambda: _load(client, task.study_uid))
    segmenter = stages.run("model", lambda: load_segmenter(task.model))
    channels, grid = stages.run("preprocess", lambda: _model_input(volume, segmenter.config))
    masks = stages.run("predict", lambda: _predict(segmenter, channels, grid))
    masks = stages.run("postprocess", lambda: _back_to_reference(masks, grid, volume))
    results = stages.run("write", lambda: build_results(
        sources, masks, model=task.model.info, job_id=task.job_id, created=task.created))
    stored = stages.run("store", lambda: _store(task, [results.seg, results.sr]))
    return {
        "ok": True,
        "model": {"name": task.model.name, "version": task.model.version,
                  "run_id": task.model.run_id, "uri": task.model.uri},
        "timings": stages.timings,
        "voxel_counts": results.voxel_counts,
        "volumes_ml": results.volumes_ml,
        "voxel_ml": results.voxel_ml,
        "reference_series": volume.series_uid,
        "source_series": dict(volume.channel_series),
        "seg": {"series_uid": results.uids.seg_series, "sop_uid": results.uids.seg_instance},
        "sr": {"series_uid": results.uids.sr_series, "sop_uid": results.uids.sr_instance},
        "stored": stored,
        "notes": results.notes,
        "not_for_clinical_use": NOT_FOR_CLINICAL_USE,
    }


# ------------------------------------------------------------------------ stages

def _load(client: Any, study_uid: str) -> tuple[Any, list[Any]]:
    """The 4-channel volume (on the T1 grid) and the T1 series' datasets (no pixels)."""
    import requests

    from neuronova_lib.volume import GeometryError

    try:
        volume = client.load_study(study_uid, progress=False)
        metadata = client.series_metadata(study_uid, volume.series_uid)
    except LookupError as exc:
        text = str(exc)
        reason = "missing_channel" if "no series for channel" in text else "channels_unclear"
        raise InferenceError(reason, text) from None
    except GeometryError as exc:
        raise InferenceError("geometry", f"study {study_uid}: {exc}") from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise InferenceError("access_refused", f"reading study {study_uid} was refused with "
                                 f"your access: {exc}") from None
        if status == 404:
            raise InferenceError("study_not_found", f"study {study_uid} is not in the "
                                 "archive") from None
        raise InferenceError("study_unreadable", f"study {study_uid}: {exc}") from None
    return volume, datasets_from_metadata(metadata)


def datasets_from_metadata(instances: list[Mapping[str, Any]]) -> list[Any]:
    """pydicom datasets from WADO-RS metadata, bulk data left out (the writers need none)."""
    from pydicom.dataset import Dataset

    out = []
    for item in instances:
        kept = {tag: value for tag, value in item.items()
                if not (isinstance(value, Mapping) and "BulkDataURI" in value)}
        out.append(Dataset.from_json(kept))
    return out


def _channel_order(config: Mapping[str, Any]) -> list[str]:
    names = [str(c).lower() for c in config.get("channels") or CHANNELS]
    unknown = [n for n in names if n not in _CHANNEL_ALIASES]
    if unknown:
        raise InferenceError("model_unavailable", f"the model asks for channels {unknown} the "
                             "platform does not know (t1, t1ce, t2, flair)")
    return [_CHANNEL_ALIASES[n] for n in names]


def _model_input(volume: Any, config: Mapping[str, Any]) -> tuple[np.ndarray, Any]:
    """The channels in the model's order, on the model's grid (the T1 grid unless the model
    has a spacing of its own). Returns ``(channels float32 (4, X, Y, Z), grid Volume)``."""
    from neuronova_lib.volume import Volume

    order = _channel_order(config)
    index = {name: i for i, name in enumerate(volume.channels)}
    channels = Volume(array=np.stack([volume.array[index[name]] for name in order]).astype(
        np.float32), affine_lps=volume.affine_lps, study_uid=volume.study_uid,
        series_uid=volume.series_uid, channels=tuple(order))
    spacing = config.get("spacing_mm")
    if spacing:
        target = np.asarray([float(s) for s in spacing], dtype=np.float64)
        current = np.asarray(volume.spacing)
        if not np.allclose(target, current, rtol=0.01):
            shape = [max(1, math.ceil(n * c / t))
                     for n, c, t in zip(volume.spatial_shape, current, target, strict=True)]
            affine = volume.affine_lps.copy()
            affine[:3, :3] = volume.direction_lps * target
            grid = Volume(array=np.zeros(shape, dtype=np.float32), affine_lps=affine)
            channels = channels.resample_to(grid)
    return np.ascontiguousarray(channels.array, dtype=np.float32), channels


def _predict(segmenter: Segmenter, channels: np.ndarray, grid: Any) -> np.ndarray:
    masks = np.asarray(segmenter(channels, spacing=tuple(grid.spacing)))
    expected = (len(REGIONS), *channels.shape[1:])
    if masks.shape != expected or masks.dtype != np.bool_:
        raise InferenceError("model_output", f"the model returned {masks.dtype} "
                             f"{masks.shape}, not bool {expected} (TC, WT, ET)")
    return masks


def _back_to_reference(masks: np.ndarray, grid: Any, volume: Any) -> np.ndarray:
    """The masks on the reference (T1) series' grid: nearest neighbour, or as they are."""
    from neuronova_lib.volume import Volume

    reference = Volume(array=np.zeros(volume.spatial_shape, dtype=np.uint8),
                       affine_lps=volume.affine_lps)
    out = []
    for mask in masks:
        placed = Volume(array=mask, affine_lps=grid.affine_lps).resample_to(reference, order=0)
        out.append(np.asarray(placed.array) > 0.5 if placed.array.dtype != np.bool_
                   else placed.array)
    return np.stack(out)


def _store(task: InferenceTask, datasets: list[Any]) -> list[dict[str, Any]]:
    """Each result through the ingest gate and the ingest core, in order (SEG, then SR)."""
    from neuronova_lib.bulk.worker import GateUnavailable, gate_for
    from neuronova_lib.ingest.quarantine import Quarantine
    from neuronova_lib.ingest.store import IngestCore
    from neuronova_lib.ingest.uniqueness import UidLocks
    from neuronova_lib.orthanc_store import OrthancStore

    try:
        gate = gate_for(task)  # type: ignore[arg-type]  # reads only .gate: one checker per process
    except GateUnavailable as exc:
        raise InferenceError("gate_unavailable", str(exc)) from None
    core = IngestCore(
        store_factory=lambda: OrthancStore(task.orthanc_url, task.orthanc_username,
                                           task.orthanc_password),
        locks=UidLocks(Path(task.uid_lock_dir)), wait=task.orthanc_wait,
        quarantine=Quarantine(root=Path(task.quarantine_dir),
                              retention=dt.timedelta(days=task.quarantine_retention_days)))
    outcomes = []
    for ds in datasets:
        data = to_bytes(ds)
        verdict = gate.check(data)
        if not verdict.accepted:
            core.refuse(data, verdict, verdict.reason or "unknown", verdict.message,
                        sender=task.username, route="inference")
            raise InferenceError("result_refused", f"the ingest gate refused the "
                                 f"{ds.Modality} result ({verdict.reason}: {verdict.message}); "
                                 "it is kept in the quarantine")
        if verdict.study_uid != task.study_uid:
            raise InferenceError(Reason.STUDY_MISMATCH, f"the {ds.Modality} result belongs to "
                                 f"study {verdict.study_uid}, not {task.study_uid}")
        outcome = core.put(data, verdict, sender=task.username, route="inference", verify=True)
        if not outcome.stored:
            raise InferenceError("result_not_stored", f"the {ds.Modality} result was not "
                                 f"stored: {outcome.reason}: {outcome.message}")
        outcomes.append({"modality": str(ds.Modality), "sop_uid": str(ds.SOPInstanceUID),
                         "orthanc_id": outcome.orthanc_id, "message": outcome.message})
    return outcomes


__all__ = [
    "STAGES",
    "TOPIC",
    "InferenceError",
    "InferenceTask",
    "ServedModel",
    "datasets_from_metadata",
    "load_segmenter",
    "resolve_model",
    "resolve_segmenter",
    "run_inference",
]
