"""Inference jobs end to end: a real platform, a real MLflow server, a real MONAI network,
Dask, the ingest gate, Orthanc.

The served model is one fixture, :func:`served_model`: the session's trained demo
model (tests/trained_model.py), registered as ``brain-tumor-seg``. It becomes the
champion the only way there is: a model owner promotes it through the API's
promotion gate, with the gate's default thresholds, on the held-out figures its
training run logged. The SEG a job writes is compared voxel for voxel with the
same model run on the case's own files, and with the synthetic case's ground truth.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
from conftest import api_token
from external_tools import tool
from trained_model import TrainedModel

from neuronova_lib.ai.inference import STAGES, ServedModel, load_segmenter
from neuronova_lib.ai.model_config import CONFIG_TAG, ModelConfig
from neuronova_lib.ai.results import REGIONS
from neuronova_lib.db.users import demo_password
from neuronova_lib.demo import write_demo_cases
from neuronova_lib.orthanc_store import OrthancStore
from neuronova_lib.stack.local import local_platform
from neuronova_lib.stack.platform import load_folder
from neuronova_lib.wado import split_multipart

pytestmark = pytest.mark.e2e

JOB_TIMEOUT = 420.0
#: The demo cases of this module: the model's own grid (2 mm) and, as in BraTS and in the
#: model's training, skull-stripped. Seed 7's first case has a tumour contrast of 0.77,
#: within the training range (the hard set's fainter tumours are reported elsewhere).
CASE_SHAPE = (96, 96, 80)
CASE_SPACING = (2.0, 2.0, 2.0)
CASE_SEED = 7
#: Least Dice per region of the job's SEG against that case's ground truth (the trained
#: model's held-out cases score 0.7-0.9 each; an untrained or misplaced SEG scores ~0).
MIN_DICE = {"TC": 0.6, "WT": 0.6, "ET": 0.5}


@dataclass(frozen=True)
class Served:
    tracking_uri: str
    uri: str
    version: str
    run_id: str
    #: Region → least Dice against the demo's ground truth (None: an untrained network).
    min_dice: dict[str, float] | None


@pytest.fixture(scope="module")
def served_model(trained_model: TrainedModel) -> Served:
    """THE model fixture: the session's trained demo model, registered as the platform's."""
    import mlflow

    mlflow.set_tracking_uri(trained_model.tracking_uri)
    version = mlflow.register_model(f"runs:/{trained_model.run_id}/model", "brain-tumor-seg")
    return Served(trained_model.tracking_uri, f"models:/brain-tumor-seg/{version.version}",
                  str(version.version), trained_model.run_id, MIN_DICE)


def _promote(url: str, settings: Any, served: Served) -> None:
    """A model owner promotes the trained version through the API's gate."""
    owner = requests.post(f"{url}/api/auth/token", timeout=30, data={
        "username": "owner", "password": demo_password(settings, "owner")})
    owner.raise_for_status()
    promoted = requests.post(
        f"{url}/api/models/brain-tumor-seg/versions/{served.version}/promote", timeout=120,
        headers={"Authorization": f"Bearer {owner.json()['access_token']}"},
        json={"reason": "inference e2e: the session's trained demo model"})
    assert promoted.status_code == 200, promoted.text


@dataclass
class Stack:
    url: str
    settings: Any
    store: OrthancStore
    full: Any  # CaseInfo of the complete case
    no_flair: Any  # CaseInfo of the case whose FLAIR series was never stored

    def login(self, username: str) -> str:
        return api_token(self.url, self.settings, username)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, served_model: Served) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("inference-home")
    cases = write_demo_cases(tmp_path_factory.mktemp("inference-cases"), cases=2,
                             seed=CASE_SEED, shape=CASE_SHAPE, spacing=CASE_SPACING,
                             skull_stripped=True)
    shutil.rmtree(cases[1].dicom_dirs["flair"])
    with local_platform(home, watch=True, mlflow_enabled=False,
                        mlflow_tracking_uri=served_model.tracking_uri,
                        inference_timeout=JOB_TIMEOUT) as local:
        for case in cases:
            loaded = load_folder(local.settings, case.directory / "dicom", htj2k=True)
            assert set(loaded["status"]) == {"Success"}, loaded
        _promote(local.url, local.settings, served_model)
        yield Stack(local.url, local.settings, OrthancStore.from_settings(local.settings),
                    cases[0], cases[1])


def _post(stack: Stack, token: str, study: str, rerun: bool = False) -> requests.Response:
    return requests.post(f"{stack.url}/api/inference", json={"study": study, "rerun": rerun},
                         headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _wait(stack: Stack, token: str, job_id: str, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(f"{stack.url}/api/inference/{job_id}", timeout=30,
                           headers={"Authorization": f"Bearer {token}"}).json()
        if job["state"] in ("done", "failed"):
            return dict(job)
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end in {timeout:.0f} s: {job}")


def _events(stack: Stack, token: str, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every Server-Sent Event of a job, read until the server ends the stream."""
    events: list[tuple[str, dict[str, Any]]] = []
    with requests.get(f"{stack.url}/api/inference/{job_id}/events", stream=True,
                      timeout=(10, JOB_TIMEOUT), headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status_code == 200, r.text[:300]
        assert r.headers["content-type"].startswith("text/event-stream")
        kind, data = "message", ""
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and data:
                events.append((kind, json.loads(data)))
                kind, data = "message", ""
    return events


def _snapshot(store: OrthancStore, study_uid: str) -> dict[str, dict[str, str]]:
    """Series UID → {SOP Instance UID: sha256 of the stored file} of a study."""
    study = store.get_json(f"/studies/{store.find_study(study_uid)}")
    out: dict[str, dict[str, str]] = {}
    for series_id in study["Series"]:
        series = store.get_json(f"/series/{series_id}")
        files = {}
        for instance_id in series["Instances"]:
            tags = store.get_json(f"/instances/{instance_id}")["MainDicomTags"]
            files[tags["SOPInstanceUID"]] = hashlib.sha256(
                store.instance_file(instance_id) or b"").hexdigest()
        out[series["MainDicomTags"]["SeriesInstanceUID"]] = files
    return out


def _retrieve(stack: Stack, token: str, study: str, series: str, sop: str) -> bytes:
    answer = requests.get(
        f"{stack.url}/api/pacs/dicom-web/studies/{study}/series/{series}/instances/{sop}",
        timeout=60, headers={"Authorization": f"Bearer {token}",
                             "Accept": 'multipart/related; type="application/dicom"'})
    assert answer.status_code == 200, answer.text[:300]
    parts = split_multipart(answer.content)
    assert parts is not None and len(parts) == 1
    return parts[0][1]


@pytest.fixture(scope="module")
def first_job(stack: Stack) -> dict[str, Any]:
    """One job on the complete case, followed live over SSE, and the study before it."""
    token = stack.login("clinician")
    study = stack.full.study_instance_uid
    before = _snapshot(stack.store, study)
    answer = _post(stack, token, study)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    events = _events(stack, token, job_id)
    job = _wait(stack, token, job_id)
    return {"job": job, "events": events, "before": before, "token": token,
            "after": _snapshot(stack.store, study)}


def test_the_job_ends_done_with_model_timings_and_volumes(first_job: dict,
                                                          served_model: Served) -> None:
    job = first_job["job"]
    assert job["state"] == "done", job["error"]
    assert job["model"] == {"name": "brain-tumor-seg", "version": served_model.version,
                            "run_id": served_model.run_id,
                            "uri": f"models:/brain-tumor-seg/{served_model.version}"}
    assert list(job["timings"]) == list(STAGES) and all(t >= 0 for t in job["timings"].values())
    assert set(job["volumes_ml"]) == set(REGIONS)
    assert "NOT FOR CLINICAL USE" in job["not_for_clinical_use"]
    assert job["created_by"] == "clinician" and job["error"] is None


def test_the_stream_delivers_every_stage_and_ends(first_job: dict) -> None:
    events = first_job["events"]
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and kinds[:-1] == ["stage"] * (len(events) - 1)
    seen = [(e["stage"], e["status"]) for kind, e in events if kind == "stage"]
    for stage in STAGES:
        assert seen.index((stage, "started")) < seen.index((stage, "done")), stage
    assert [s for s, status in seen if status == "started"] == list(STAGES)
    assert events[-1][1]["job_id"] == first_job["job"]["job_id"]


@pytest.fixture(scope="module")
def stored(first_job: dict, stack: Stack) -> dict[str, Any]:
    """The first job's SEG and SR as DICOMweb returns them, and the SEG on the T1 grid."""
    job, token = first_job["job"], first_job["token"]
    assert job["state"] == "done", job["error"]
    study = stack.full.study_instance_uid
    seg_bytes = _retrieve(stack, token, study, job["seg"]["series_uid"], job["seg"]["sop_uid"])
    sr_bytes = _retrieve(stack, token, study, job["sr"]["series_uid"], job["sr"]["sop_uid"])
    seg = hd.seg.segread(io.BytesIO(seg_bytes))
    slices = [str(ds.SOPInstanceUID) for ds in sorted(
        (pydicom.dcmread(p, stop_before_pixels=True)
         for p in Path(stack.full.dicom_dirs["t1"]).glob("*.dcm")),
        key=lambda ds: float(ds.ImagePositionPatient[2]))]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=slices,
                                               segment_numbers=[1, 2, 3],
                                               ignore_spatial_locations=True)
    return {"seg_bytes": seg_bytes, "sr_bytes": sr_bytes, "seg": seg,
            "sr": hd.sr.srread(io.BytesIO(sr_bytes)),
            "masks": pixels.transpose(3, 2, 1, 0).astype(bool)}  # (3, X, Y, Z)


def test_seg_and_sr_are_in_orthanc_and_agree(first_job: dict, stored: dict, stack: Stack,
                                             tmp_path: Path) -> None:
    job = first_job["job"]
    for name in ("seg", "sr"):
        (tmp_path / f"{name}.dcm").write_bytes(stored[f"{name}_bytes"])
        done = subprocess.run([tool("dciodvfy", "dicom3tools"), str(tmp_path / f"{name}.dcm")],
                              capture_output=True, text=True, timeout=60, check=False)
        errors = [line for line in (done.stdout + done.stderr).splitlines()
                  if line.lstrip().lower().startswith("error")]
        assert errors == [], f"{name}: {errors}"
    # The SR has no pixels: retrievable at series level too, and it has no frames.
    study, sr_series = stack.full.study_instance_uid, job["sr"]["series_uid"]
    headers = {"Authorization": f"Bearer {first_job['token']}"}
    whole = requests.get(f"{stack.url}/api/pacs/dicom-web/studies/{study}/series/{sr_series}",
                         timeout=60, headers={**headers, "Accept": 'multipart/related; '
                                              'type="application/dicom"'})
    assert whole.status_code == 200 and len(split_multipart(whole.content) or []) == 1
    frame = requests.get(f"{stack.url}/api/pacs/dicom-web/studies/{study}/series/{sr_series}"
                         f"/instances/{job['sr']['sop_uid']}/frames/1", timeout=60,
                         headers=headers)
    assert frame.status_code == 404
    t1 = stack.full.series_instance_uids["t1"]
    assert [s.SeriesInstanceUID for s in stored["seg"].ReferencedSeriesSequence] == [t1]
    assert job["source_series"]["reference"] == t1
    groups = stored["sr"].content.get_volumetric_roi_measurement_groups()
    voxel_ml = float(np.prod(CASE_SPACING)) / 1000.0
    for number, region in enumerate(REGIONS, start=1):
        count = int(stored["masks"][number - 1].sum())
        assert count == job["voxel_counts"][region]
        (measurement,) = groups[number - 1].get_measurements()
        assert measurement.value == job["volumes_ml"][region] == round(count * voxel_ml, 6)
        reference = groups[number - 1].referenced_segment
        assert reference.referenced_sop_instance_uid == job["seg"]["sop_uid"]


def test_the_seg_is_what_the_model_says_on_the_case_itself(first_job: dict, stored: dict,
                                                           stack: Stack,
                                                           served_model: Served) -> None:
    """The platform's SEG, voxel for voxel, against the same model run here on the case's NIfTI
    files (the same voxels as its DICOM): the pipeline's loading, grids and SEG frames add
    nothing and lose nothing. With a trained model, also Dice against the ground truth."""
    masks = stored["masks"]
    used = first_job["job"]["model"]  # the version the job ran, as it recorded it
    segmenter = load_segmenter(ServedModel(used["name"], used["version"], used["run_id"],
                                           used["uri"], served_model.tracking_uri))
    channels = np.stack([np.asarray(nib.load(stack.full.nifti[c]).dataobj, dtype=np.float32)
                         for c in ("t1", "t1c", "t2", "flair")])
    local = segmenter(channels, spacing=CASE_SPACING)
    agreement = float((local == masks).mean())
    assert agreement >= 0.999, agreement
    assert [bool(m.any()) for m in local] == [bool(m.any()) for m in masks]
    if served_model.min_dice is not None:
        labels = np.asarray(nib.load(stack.full.labels).dataobj)
        truth = np.stack([(labels == 1) | (labels == 4), labels > 0, labels == 4])
        for i, region in enumerate(REGIONS):
            dice = 2 * (masks[i] & truth[i]).sum() / max(1, masks[i].sum() + truth[i].sum())
            print(f"\njob SEG against the ground truth: {region} Dice {dice:.3f}")
            assert dice >= served_model.min_dice[region], (region, dice)


def test_the_study_is_only_added_to(first_job: dict) -> None:
    before, after, job = first_job["before"], first_job["after"], first_job["job"]
    assert {s: after[s] for s in before} == before  # every source instance, byte for byte
    assert set(after) - set(before) == {job["seg"]["series_uid"], job["sr"]["series_uid"]}


def test_a_second_request_returns_the_job_unless_rerun(first_job: dict, stack: Stack) -> None:
    token = stack.login("scientist")
    study = stack.full.study_instance_uid
    again = _post(stack, token, study)
    assert again.status_code == 200, again.text
    assert again.json()["job_id"] == first_job["job"]["job_id"] and again.json()["existing"]
    rerun = _post(stack, token, study, rerun=True)
    assert rerun.status_code == 202, rerun.text
    job = _wait(stack, token, rerun.json()["job_id"])
    assert job["state"] == "done", job["error"]
    assert job["seg"]["sop_uid"] != first_job["job"]["seg"]["sop_uid"]
    assert job["voxel_counts"] == first_job["job"]["voxel_counts"]  # same model, same study


def test_a_study_missing_a_channel_fails_and_says_which(stack: Stack) -> None:
    token = stack.login("clinician")
    before = _snapshot(stack.store, stack.no_flair.study_instance_uid)
    answer = _post(stack, token, stack.no_flair.study_instance_uid)
    assert answer.status_code == 202, answer.text
    job = _wait(stack, token, answer.json()["job_id"])
    assert job["state"] == "failed"
    assert job["error"].startswith("missing_channel:") and "flair" in job["error"], job["error"]
    assert job["stages"][-1]["stage"] == "failed"
    assert _snapshot(stack.store, stack.no_flair.study_instance_uid) == before
    events = _events(stack, token, job["job_id"])
    assert events[-1][0] == "failed"
    # A failed job is not returned in place of a new one.
    retry = _post(stack, token, stack.no_flair.study_instance_uid)
    assert retry.status_code == 202 and retry.json()["job_id"] != job["job_id"]
    _wait(stack, token, retry.json()["job_id"])


def test_who_may_ask_and_what_is_refused(stack: Stack) -> None:
    owner = stack.login("owner")
    refused = _post(stack, owner, stack.full.study_instance_uid)
    assert refused.status_code == 403
    clinician = stack.login("clinician")
    missing = _post(stack, clinician, "1.2.3.4.5.6.7")
    assert missing.status_code == 404 and "not in the archive" in missing.json()["detail"]
    bad = _post(stack, clinician, "not-a-uid")
    assert bad.status_code == 422
    assert requests.post(f"{stack.url}/api/inference", json={"study": "1.2.3"},
                         timeout=30).status_code == 401
    assert requests.get(f"{stack.url}/api/inference/nope", timeout=30, headers={
        "Authorization": f"Bearer {clinician}"}).status_code == 404


def _job(stack: Stack, token: str, job_id: str) -> dict[str, Any]:
    return dict(requests.get(f"{stack.url}/api/inference/{job_id}", timeout=30,
                             headers={"Authorization": f"Bearer {token}"}).json())


def _attempts(job: dict[str, Any]) -> int:
    """How many times a worker started the job (each attempt starts with 'load')."""
    return sum(1 for e in job["stages"] if (e["stage"], e["status"]) == ("load", "started"))


def _wait_for_attempt(stack: Stack, token: str, job_id: str, attempt: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = _job(stack, token, job_id)
        assert job["state"] not in ("done", "failed"), f"ended before attempt {attempt}: {job}"
        if _attempts(job) >= attempt:
            return
        time.sleep(0.1)
    raise AssertionError(f"attempt {attempt} of job {job_id} did not start")


def _kill_worker(stack: Stack) -> None:
    """SIGKILL the Dask worker process of the API's local cluster (it holds the model)."""
    import psutil

    api = next(p for p in psutil.process_iter(["cmdline"])
               if "services.api.app:create_app" in " ".join(p.info["cmdline"] or [])
               and str(stack.settings.api_port) in " ".join(p.info["cmdline"] or []))
    workers = [c for c in api.children() if "spawn" in " ".join(c.cmdline())]
    assert workers, "no Dask worker process under the API"
    max(workers, key=lambda p: p.memory_info().rss).kill()


def test_a_killed_worker_retries_the_job(stack: Stack) -> None:
    token = stack.login("clinician")
    job_id = _post(stack, token, stack.full.study_instance_uid, rerun=True).json()["job_id"]
    _wait_for_attempt(stack, token, job_id, 1)
    _kill_worker(stack)
    job = _wait(stack, token, job_id)
    assert job["state"] == "done", job["error"]
    assert _attempts(job) == 2  # Dask ran it again on the restarted worker


def test_a_worker_killed_on_every_attempt_fails_the_job(stack: Stack) -> None:
    token = stack.login("clinician")
    job_id = _post(stack, token, stack.full.study_instance_uid, rerun=True).json()["job_id"]
    before = _snapshot(stack.store, stack.full.study_instance_uid)
    for attempt in (1, 2):  # NEURONOVA_INFERENCE_RETRIES = 1: two attempts in all
        _wait_for_attempt(stack, token, job_id, attempt)
        _kill_worker(stack)
    job = _wait(stack, token, job_id)
    assert job["state"] == "failed" and job["error"].startswith("worker_died:"), job
    assert job["stages"][-1]["stage"] == "failed"
    # Whatever a killed attempt stored is a result of this job, never a change to the source.
    after = _snapshot(stack.store, stack.full.study_instance_uid)
    assert {s: after[s] for s in before} == before


def test_an_alias_moved_outside_the_gate_is_never_served(stack: Stack,
                                                         served_model: Served) -> None:
    """`champion` set straight through MLflow (as its UI or REST API would) on a version the
    gate never approved: inference refuses to run it; put back, the approved one serves."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient
    from monai.networks.nets import UNet

    torch.manual_seed(11)
    other = UNet(spatial_dims=3, in_channels=4, out_channels=3, channels=(8, 16, 32),
                 strides=(2, 2), num_res_units=1).eval()
    mlflow.set_tracking_uri(served_model.tracking_uri)
    mlflow.set_experiment("inference-e2e")
    with mlflow.start_run():
        mlflow.set_tag(CONFIG_TAG, ModelConfig().to_json())
        info = mlflow.pytorch.log_model(other, name="model", serialization_format="pickle",
                                        registered_model_name="brain-tumor-seg")
    client = MlflowClient(served_model.tracking_uri)
    sneaked = str(info.registered_model_version)
    assert sneaked != served_model.version
    client.set_registered_model_alias("brain-tumor-seg", "champion", sneaked)
    token = stack.login("clinician")
    try:
        refused = _post(stack, token, stack.full.study_instance_uid, rerun=True)
        assert refused.status_code == 503, refused.text
        assert "without the promotion gate" in refused.text, refused.text
        assert f"version {sneaked} " in refused.text
    finally:
        client.set_registered_model_alias("brain-tumor-seg", "champion", served_model.version)
    served = _post(stack, token, stack.full.study_instance_uid)
    assert served.status_code in (200, 202), served.text
    job = _job(stack, token, served.json()["job_id"])
    assert job["model"]["version"] == served_model.version


def test_up_trains_no_demo_model_while_an_approved_champion_is_served(
        stack: Stack, served_model: Served) -> None:
    from neuronova_lib.ai.demo_model import ensure_demo_model

    model = ensure_demo_model(stack.settings, progress=False)
    assert (model.trained, model.served, model.version) == (False, True, served_model.version)
    assert "approved champion" in model.message


def test_platform_studies_become_training_cases_read_with_the_users_access(
        stack: Stack, tmp_path: Path) -> None:
    """`neuronova train --studies`: each study over DICOMweb as the signed-in scientist, its
    label map from beside it, written in the BraTS layout the training code reads."""
    from neuronova_lib.ai.dataset import DatasetError, read_cases
    from neuronova_lib.ai.platform_data import export_studies
    from neuronova_lib.dicomweb.session import connect

    study = stack.full.study_instance_uid
    labels = tmp_path / "labels"
    labels.mkdir()
    client = connect(stack.url, username="scientist",
                     password=demo_password(stack.settings, "scientist"))
    with client:
        with pytest.raises(DatasetError, match=f"{study}_seg.nii.gz"):
            export_studies(client, [study], labels, tmp_path / "cases")
        shutil.copy(stack.full.labels, labels / f"{study}_seg.nii.gz")
        export_studies(client, [study], labels, tmp_path / "cases")
        no_flair = stack.no_flair.study_instance_uid
        shutil.copy(stack.no_flair.labels, labels / f"{no_flair}_seg.nii.gz")
        with pytest.raises(LookupError, match="flair"):
            export_studies(client, [no_flair], labels, tmp_path / "more")
    (case,) = read_cases(tmp_path / "cases")
    for channel, suffix in (("t1", "t1"), ("t1c", "t1ce"), ("t2", "t2"), ("flair", "flair")):
        written = nib.load(case.images[suffix])
        source = nib.load(stack.full.nifti[channel])
        assert np.array_equal(np.asarray(written.dataobj), np.asarray(source.dataobj)), channel
        assert np.allclose(written.affine, source.affine, atol=1e-3), channel
    assert np.array_equal(np.asarray(nib.load(case.label).dataobj),
                          np.asarray(nib.load(stack.full.labels).dataobj))
