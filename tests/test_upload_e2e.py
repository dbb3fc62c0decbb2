"""Uploading studies through the API (``POST /api/studies``), end to end through nginx.

An admin uploads DICOM files and a zip; the API answers 202 with a job id at
once and transcodes in the background (a LocalCluster started for the job);
the job ends ``done`` with every good instance in Orthanc as HTJ2K, bit-exact.
Every file passes the ingest gate first: each FINDINGS bad-input class is
reported with the gate's reason, kept in the quarantine (route ``upload``,
the admin as sender) and never reaches Orthanc, which stays up. A file whose
SOP Instance UID Orthanc holds as a different instance is a conflict,
quarantined, the stored file untouched. Others get 403; a zip that tries to
leave the upload folder is refused and nothing is stored.
"""

from __future__ import annotations

import copy
import hashlib
import io
import time
import zipfile
from datetime import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from orthanc_checks import assert_stored_as_htj2k
import requests
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from neuronova_lib.bulk import OrthancAccess
from neuronova_lib.config import Settings
from neuronova_lib.db.engine import get_engine, session_factory
from neuronova_lib.db.models import Job
from neuronova_lib.db.users import demo_password
from neuronova_lib.demo import write_demo_cases
from neuronova_lib.demo.phantom import SIZES
from neuronova_lib.ingest import Quarantine
from neuronova_lib.stack.local import local_settings
from neuronova_lib.stack.platform import prepare_home
from services.api.app import create_app

from bad_inputs import bad_inputs, dicom_bytes, good_mr

pytestmark = pytest.mark.e2e

SHAPE, SPACING = SIZES["small"]
JOB_TIMEOUT = 90.0


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _wait_for_job(url: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        answer = requests.get(url, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        job = answer.json()
        if job["state"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, f"job still {job['state']} after {JOB_TIMEOUT} s"
        time.sleep(0.5)


def _truncated_copy(model: Path) -> bytes:
    """``model`` with a new SOP Instance UID, cut in the pixel data."""
    ds = pydicom.dcmread(model)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    whole = io.BytesIO()
    ds.save_as(whole, enforce_file_format=True)
    return whole.getvalue()[:-2000]


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The files of one series of a small demo study (unique UIDs: its own seed)."""
    [info] = write_demo_cases(tmp_path_factory.mktemp("upload-demo"), cases=1, seed=8807,
                              shape=SHAPE, spacing=SPACING)
    files = sorted((info.directory / "dicom").rglob("*.dcm"))
    first_series = files[0].parent
    return [f for f in files if f.parent == first_series]


def test_admin_uploads_files_and_a_zip_then_the_job_stores_them_as_htj2k(
    platform: Any, series: list[Path]
) -> None:
    admin = _bearer(platform.login("admin"))
    loose, zipped = series[:2], series[2:]
    broken_name = "broken/truncated.dcm"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in zipped:
            zf.write(path, f"series/{path.name}")
        zf.writestr(broken_name, _truncated_copy(zipped[0]))
        zf.writestr("notes.txt", "not an image\n")
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in loose]
    files.append(("files", ("rest-of-series.zip", buffer.getvalue(), "application/zip")))

    started = time.monotonic()
    answer = requests.post(f"{platform.url}/api/studies", files=files, headers=admin, timeout=60)
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["state"] == "queued" and len(accepted["job_id"]) == 32
    assert accepted["files"] == len(series) + 2
    assert answer.headers["Location"] == accepted["status_url"] == f"/api/jobs/{accepted['job_id']}"
    assert time.monotonic() - started < 10, "the upload must not wait for the transcoding"

    job = _wait_for_job(f"{platform.url}{accepted['status_url']}", admin)
    assert job["state"] == "done", job
    assert job["counts"]["done"] == len(series), job
    assert job["counts"]["failed"] == 2 and job["counts"]["pending"] == 0, job
    assert job["counts"]["skipped"] == 0, job
    assert job["created_by"] == "admin" and job["finished_at"] and job["started_at"]
    # Files are reported relative to the upload: '<nnn>-<zip name>/<member>'. From an
    # upload, a file that is not DICOM is refused and kept too (the upload is all there is).
    failed = {f["file"].split("rest-of-series/")[-1]: f for f in job["failures"]}
    assert set(failed) == {broken_name, "notes.txt"}, job["failures"]
    assert failed[broken_name]["reason"] == "length_exceeds_data", failed
    assert failed["notes.txt"]["reason"] == "not_dicom", failed
    assert all(f["message"] and "quarantined" in f["message"] for f in failed.values())
    assert job["skipped"] == []

    listed = requests.get(f"{platform.url}/api/jobs", headers=admin, timeout=10).json()
    assert listed[0]["job_id"] == accepted["job_id"]

    orthanc = OrthancAccess.from_settings(platform.settings)
    for source in series:
        assert_stored_as_htj2k(orthanc, source)


def _changes_since(orthanc: OrthancAccess, mark: int) -> list[dict[str, Any]]:
    """Orthanc's changes after ``mark`` that a store, delete or modification made."""
    answer = orthanc.get_json(f"/changes?since={mark}&limit=10000")
    assert answer["Done"]
    return [c for c in answer["Changes"] if not c["ChangeType"].startswith("Stable")]


def _quarantined_by(sha: str, settings: Settings, since: datetime) -> dict[str, Any] | None:
    """The quarantine submission of ``sha`` made by this upload (route upload, sender admin)."""
    for entry in Quarantine(settings).list():
        if entry.sha256 == sha:
            for sub in entry.submissions:
                if (sub["route"], sub["sender"]) == ("upload", "admin") \
                        and datetime.fromisoformat(sub["at"]) >= since:
                    return {**sub, "bytes": entry.read_bytes()}
    return None


def test_every_bad_input_class_is_refused_quarantined_and_never_reaches_orthanc(
    platform: Any, tmp_path: Path,
) -> None:
    admin = _bearer(platform.login("admin"))
    orthanc = OrthancAccess.from_settings(platform.settings)
    cases = bad_inputs()
    names = sorted(cases)
    loose, zipped = names[: len(names) // 2], names[len(names) // 2:]
    good = {f"good-{i}.dcm": good_mr(i) for i in range(2)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in zipped:
            zf.writestr(f"bad/{name}.dcm", cases[name][0])
        zf.writestr("good/good-1.dcm", good["good-1.dcm"])
    files = [("files", (f"{name}.dcm", cases[name][0], "application/dicom")) for name in loose]
    files.append(("files", ("good-0.dcm", good["good-0.dcm"], "application/dicom")))
    files.append(("files", ("mixed.zip", buffer.getvalue(), "application/zip")))

    since = datetime.now().astimezone()
    mark = int(orthanc.get_json("/changes?last")["Last"])
    answer = requests.post(f"{platform.url}/api/studies", files=files, headers=admin, timeout=60)
    assert answer.status_code == 202, answer.text
    job = _wait_for_job(f"{platform.url}{answer.json()['status_url']}", admin)

    assert job["state"] == "done", job
    assert job["counts"] == {"done": 2, "failed": len(cases), "skipped": 0, "pending": 0}, job
    reasons = {Path(f["file"]).stem.split("-", 1)[-1] if f["file"].count("/") == 0
               else Path(f["file"]).stem: f["reason"] for f in job["failures"]}
    assert reasons == {name: reason for name, (_, reason) in cases.items()}, job["failures"]
    for name, (data, reason) in cases.items():
        kept = _quarantined_by(hashlib.sha256(data).hexdigest(), platform.settings, since)
        assert kept is not None, f"{name} is not in the quarantine"
        assert kept["reason"] == reason and kept["bytes"] == data, name

    # Orthanc took the two good instances and nothing else, and is still up.
    new = [c for c in _changes_since(orthanc, mark) if c["ChangeType"] == "NewInstance"]
    stored_ids = set()
    for name, data in good.items():
        path = tmp_path / name
        path.write_bytes(data)
        stored_ids.add(assert_stored_as_htj2k(orthanc, path))
    assert {c["ID"] for c in new} == stored_ids
    assert {c["ChangeType"] for c in _changes_since(orthanc, mark)} <= {
        "NewInstance", "NewSeries", "NewStudy", "NewPatient"}
    assert orthanc.get_json("/system")["Version"]


def _upload(platform: Any, admin: dict[str, str], files: dict[str, bytes]) -> dict[str, Any]:
    payload = [("files", (name, data, "application/dicom")) for name, data in files.items()]
    answer = requests.post(f"{platform.url}/api/studies", files=payload, headers=admin,
                           timeout=60)
    assert answer.status_code == 202, answer.text
    job = _wait_for_job(f"{platform.url}{answer.json()['status_url']}", admin)
    assert job["state"] == "done", job
    return job


def test_a_different_file_under_a_stored_sop_instance_uid_is_a_quarantined_conflict(
    platform: Any,
) -> None:
    admin = _bearer(platform.login("admin"))
    orthanc = OrthancAccess.from_settings(platform.settings)
    first = good_mr(0)
    ds = pydicom.dcmread(io.BytesIO(first))
    job = _upload(platform, admin, {"first.dcm": first})
    assert job["counts"]["done"] == 1 and job["counts"]["failed"] == 0, job
    iid = orthanc.find_instance(ds.SOPInstanceUID)
    assert iid
    stored = orthanc.instance_file(iid)  # the HTJ2K copy
    # Another instance, stored as it came (uncompressed), sent again in another syntax.
    other = pydicom.dcmread(io.BytesIO(good_mr(1)))
    other_id = orthanc.store(dicom_bytes(other))["ID"]
    other_stored = orthanc.instance_file(other_id)

    changed = copy.deepcopy(ds)  # same SOP Instance UID, other content
    changed.PatientName = "Someone^Else"
    arr = changed.pixel_array.copy()
    arr[0, 0] += 1
    changed.PixelData = arr.tobytes()
    conflicting = dicom_bytes(changed)
    since = datetime.now().astimezone()
    job = _upload(platform, admin, {"conflict.dcm": conflicting, "again.dcm": first,
                                    "other-implicit.dcm": dicom_bytes(other, implicit=True)})

    assert job["counts"] == {"done": 2, "failed": 1, "skipped": 0, "pending": 0}, job
    [failure] = job["failures"]
    assert failure["file"].endswith("conflict.dcm") and failure["sop_instance_uid"] == \
        ds.SOPInstanceUID, failure
    assert failure["reason"] == "sop_instance_conflict", failure
    kept = _quarantined_by(hashlib.sha256(conflicting).hexdigest(), platform.settings, since)
    assert kept is not None and kept["bytes"] == conflicting
    assert kept["reason"] == "sop_instance_conflict"
    # What Orthanc held is untouched, byte for byte; the same instance sent again is fine.
    assert orthanc.instance_file(iid) == stored
    assert orthanc.instance_file(other_id) == other_stored
    assert orthanc.find_instance(ds.SOPInstanceUID) == iid


def test_clinician_cannot_upload_or_read_jobs(platform: Any, series: list[Path]) -> None:
    clinician = _bearer(platform.login("clinician"))
    files = [("files", (series[0].name, series[0].read_bytes(), "application/dicom"))]
    answer = requests.post(f"{platform.url}/api/studies", files=files, headers=clinician,
                           timeout=30)
    assert answer.status_code == 403, answer.text
    assert requests.get(f"{platform.url}/api/jobs", headers=clinician,
                        timeout=10).status_code == 403


def test_zip_with_a_traversal_member_is_refused_and_nothing_is_stored(
    platform: Any, series: list[Path]
) -> None:
    admin = _bearer(platform.login("admin"))
    uploads = platform.settings.home / "uploads"
    before = set(uploads.iterdir()) if uploads.exists() else set()
    jobs_before = requests.get(f"{platform.url}/api/jobs", headers=admin, timeout=10).json()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("fine/one.dcm", series[0].read_bytes())
        zf.writestr("../evil", "escape")
    files = [("files", ("evil.zip", buffer.getvalue(), "application/zip"))]
    answer = requests.post(f"{platform.url}/api/studies", files=files, headers=admin, timeout=30)
    assert answer.status_code == 400, answer.text
    assert "'../evil'" in answer.json()["detail"]
    after = set(uploads.iterdir()) if uploads.exists() else set()
    assert after == before
    assert not (uploads.parent / "evil").exists() and not (uploads / "evil").exists()
    jobs_after = requests.get(f"{platform.url}/api/jobs", headers=admin, timeout=10).json()
    assert [j["job_id"] for j in jobs_after] == [j["job_id"] for j in jobs_before]


# -- the API alone (no Orthanc): limits, unsafe zips, resuming after a restart ----------


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[tuple[TestClient, Settings]]:
    """The API in-process on its own data dir, with small upload limits and no Orthanc."""
    settings = local_settings(tmp_path / "home", upload_max_files=3, upload_max_bytes=10_000)
    prepare_home(settings)
    with TestClient(create_app(settings)) as client:
        yield client, settings
    get_engine(settings.sqlalchemy_url).dispose()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        link = zipfile.ZipInfo("link.dcm")
        link.create_system = 3
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize(("payload", "code", "words"), [
    (_zip({"/abs/one.dcm": b"x"}), 400, "absolute path"),
    (_zip({"a/../../evil": b"x"}), 400, "'..'"),
    (_symlink_zip(), 400, "symbolic link"),
    (b"PK\x03\x04 not really a zip", 400, "not a readable zip"),
    (_zip({f"{i}.dcm": b"x" for i in range(4)}), 413, "upload_max_files"),
    (_zip({"big.dcm": b"\0" * 20_000}), 413, "upload_max_bytes"),  # 20 kB from ~100 bytes
    (_zip({"empty/": b""}), 400, "no files"),
])
def test_unsafe_or_oversized_uploads_are_refused_and_nothing_is_kept(
    offline: tuple[TestClient, Settings], payload: bytes, code: int, words: str
) -> None:
    client, settings = offline
    headers = _bearer(client.post("/api/auth/token", data={
        "username": "admin", "password": demo_password(settings, "admin")}).json()["access_token"])
    answer = client.post("/api/studies", headers=headers,
                         files=[("files", ("upload.zip", payload, "application/zip"))])
    assert answer.status_code == code, answer.text
    assert words in answer.json()["detail"]
    uploads = settings.home / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
    assert client.get("/api/jobs", headers=headers).json() == []


def test_a_job_left_running_is_resumed_and_a_run_that_cannot_start_fails_with_its_error(
    tmp_path: Path,
) -> None:
    settings = local_settings(tmp_path / "home")
    prepare_home(settings)
    (settings.home / "uploads" / ("a" * 32)).mkdir(parents=True)
    with session_factory(settings.sqlalchemy_url)() as db:
        db.add(Job(id="a" * 32, kind="upload", state="running", created_by="admin",
                   file_count=1, bytes=1))
        db.commit()
    with TestClient(create_app(settings)):  # no Orthanc on settings.orthanc_port
        deadline = time.monotonic() + 30
        while True:
            with session_factory(settings.sqlalchemy_url)() as db:
                job = db.get(Job, "a" * 32)
                assert job is not None
            if job.state == "failed" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert job.state == "failed" and job.started_at is not None
    assert job.error and "does not answer" in job.error, job.error
    get_engine(settings.sqlalchemy_url).dispose()
