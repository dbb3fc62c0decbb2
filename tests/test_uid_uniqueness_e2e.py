"""A SOP Instance UID is unique in the archive, through every way in (real Orthanc, real stack).

Orthanc 1.10 alone stores a second object with a stored SOP Instance UID when it
comes under another patient and study, after which WADO-RS answers 404 for both.
Here the platform refuses it (``sop_instance_conflict``, quarantined) through
STOW-RS, the upload route and the bulk worker, the original stays retrievable bit
for bit, two concurrent senders of one UID store exactly one object, and
``neuronova check uids`` finds what an archive filled before the fix holds twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from bad_inputs import dicom_bytes, good_mr
from orthanc_checks import retrieve_instance
from pydicom.uid import generate_uid
from test_stow_e2e import failed_items, stow, warnings_of
from test_upload_e2e import _bearer, _wait_for_job

from neuronova_lib.bulk import WorkerConfig, parse_source, process_batch
from neuronova_lib.ingest import Gate, Quarantine
from neuronova_lib.ingest.stow import DUPLICATE_SOP_INSTANCE, PROCESSING_FAILURE
from neuronova_lib.ingest.store import Ingestor
from neuronova_lib.ingest.uid_audit import duplicate_uids
from neuronova_lib.ingest.uniqueness import orthanc_id
from neuronova_lib.security.secret_store import orthanc_service_account

pytestmark = pytest.mark.e2e


def _ds(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def elsewhere(data: bytes, *, keep: tuple[str, ...] = ("SOPInstanceUID",)) -> bytes:
    """The same file under another patient, study and series, keeping the UIDs in ``keep``."""
    ds = _ds(data)
    ds.PatientID = f"OTHER-{generate_uid()[-8:]}"
    ds.PatientName = "Other^Patient"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if keyword not in keep:
            setattr(ds, keyword, generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return dicom_bytes(ds)


def wado_instance(platform: Any, data: bytes) -> bytes:
    """The instance as WADO-RS returns it through nginx and the guard (stored bytes)."""
    return retrieve_instance(platform.url, platform.access_token("clinician"), data)


def held(platform: Any, sop: str) -> list[str]:
    return platform.store.lookup_all(sop, "Instance")


def quarantined(platform: Any, data: bytes) -> str | None:
    entry = Quarantine(platform.settings).get(hashlib.sha256(data).hexdigest())
    return entry.reason if entry else None


# ---------------------------------------------------------------- STOW-RS


def test_stow_same_sop_uid_under_another_patient_and_study_is_refused(platform: Any) -> None:
    original = good_mr(21)
    assert stow(platform, [original]).status_code == 200
    sop = str(_ds(original).SOPInstanceUID)
    other = elsewhere(original)

    response = stow(platform, [other])

    assert response.status_code == 409, response.text
    (item,) = failed_items(response.json())
    assert item["00081197"]["Value"] == [DUPLICATE_SOP_INSTANCE]
    assert ": sop_instance_conflict: " in warnings_of(response)[0]
    assert quarantined(platform, other) == "sop_instance_conflict"
    assert len(held(platform, sop)) == 1
    assert wado_instance(platform, original) == original  # still retrievable, bit for bit
    # The same instance again is a harmless duplicate: 200, nothing new stored.
    assert stow(platform, [original]).status_code == 200
    assert len(held(platform, sop)) == 1


def test_stow_series_or_study_uid_under_another_patient_is_refused(platform: Any) -> None:
    original = good_mr(22)
    assert stow(platform, [original]).status_code == 200
    series_elsewhere = elsewhere(original, keep=("SeriesInstanceUID",))
    study_elsewhere = elsewhere(original, keep=("StudyInstanceUID",))

    response = stow(platform, [series_elsewhere, study_elsewhere])

    assert response.status_code == 409, response.text
    text = " ".join(warnings_of(response))
    assert ": series_instance_conflict: " in text and ": study_instance_conflict: " in text
    assert {i["00081197"]["Value"][0] for i in failed_items(response.json())} == {
        PROCESSING_FAILURE}
    assert quarantined(platform, series_elsewhere) == "series_instance_conflict"
    assert quarantined(platform, study_elsewhere) == "study_instance_conflict"
    for data in (series_elsewhere, study_elsewhere):
        assert held(platform, str(_ds(data).SOPInstanceUID)) == []
    # A new series in the same study, same patient: fine.
    ds = _ds(original)
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    assert stow(platform, [dicom_bytes(ds)]).status_code == 200


def test_orthanc_ids_hash_as_the_uniqueness_check_assumes(platform: Any) -> None:
    data = good_mr(23)
    ds = _ds(data)
    answer = platform.store.store(data)
    assert answer["ID"] == orthanc_id(ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                      ds.SOPInstanceUID)
    assert answer["ParentSeries"] == orthanc_id(ds.PatientID, ds.StudyInstanceUID,
                                                ds.SeriesInstanceUID)


def test_the_uid_lookup_is_an_index_query(platform: Any, tmp_path: Path) -> None:
    """Orthanc's /tools/lookup reads DicomIdentifiers by an index on the value, not a scan."""
    index = platform.settings.orthanc_storage / "index"
    copy_path = tmp_path / "index.sqlite"
    shutil.copyfile(index, copy_path)
    # Orthanc keeps its index in WAL mode: until a checkpoint, the tables may live only in
    # the write-ahead log, so the copy takes it along (SQLite replays it on open).
    wal = index.with_name(index.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, copy_path.with_name(copy_path.name + "-wal"))
    with sqlite3.connect(copy_path) as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT d.id FROM DicomIdentifiers AS d, Resources AS r "
            "WHERE d.id = r.internalId AND r.resourceType = 3 AND d.tagGroup = 8 "
            "AND d.tagElement = 24 AND d.value = '1.2.3'").fetchall()
    details = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX" in details and "DicomIdentifiers" in details, details
    assert "SCAN d" not in details and "SCAN DicomIdentifiers" not in details, details


# ---------------------------------------------------------------- upload and transcode


def test_upload_same_sop_uid_under_another_patient_is_refused(platform: Any) -> None:
    original = good_mr(24)
    assert stow(platform, [original]).status_code == 200
    other = elsewhere(original)
    admin = _bearer(platform.login("admin"))
    answer = requests.post(f"{platform.url}/api/studies", headers=admin, timeout=60,
                           files=[("files", ("other.dcm", other, "application/dicom"))])
    assert answer.status_code == 202, answer.text
    job = _wait_for_job(f"{platform.url}{answer.json()['status_url']}", admin)
    assert job["counts"]["failed"] == 1 and job["counts"]["done"] == 0, job
    assert job["failures"][0]["reason"] == "sop_instance_conflict", job
    assert quarantined(platform, other) == "sop_instance_conflict"
    assert len(held(platform, str(_ds(original).SOPInstanceUID))) == 1
    assert wado_instance(platform, original) == original


def _worker_config(platform: Any, tmp_path: Path) -> WorkerConfig:
    account = orthanc_service_account(platform.settings.secrets_dir)
    return WorkerConfig.for_settings(
        platform.settings, orthanc_url=platform.settings.orthanc_url,
        username=account["username"], password=account["password"],
        backup_dir=str(tmp_path / "backup"), route="transcode", sender="tester")


def test_transcode_same_sop_uid_under_another_patient_is_refused(
    platform: Any, tmp_path: Path,
) -> None:
    original = good_mr(25)
    assert stow(platform, [original]).status_code == 200
    folder = tmp_path / "incoming"
    folder.mkdir()
    other = elsewhere(original)
    (folder / "other.dcm").write_bytes(other)
    (folder / "same.dcm").write_bytes(original)

    results = {Path(r["key"].split("|")[0]).name: r for r in
               process_batch(parse_source(str(folder)).items(), _worker_config(platform, tmp_path))}

    assert results["other.dcm"]["reason"] == "sop_instance_conflict", results
    assert results["other.dcm"]["quarantine_sha256"] == hashlib.sha256(other).hexdigest()
    assert results["same.dcm"]["state"] == "done", results  # the same instance: a duplicate
    assert quarantined(platform, other) == "sop_instance_conflict"
    assert len(held(platform, str(_ds(original).SOPInstanceUID))) == 1
    assert wado_instance(platform, original) == original


# ---------------------------------------------------------------- two senders at once


def _ingest_all(settings: Any, files: list[bytes], barrier: Any, out: Any) -> None:
    with Gate(settings) as gate:
        ingestor = Ingestor(settings, gate)
        verdicts = [gate.check(f) for f in files]
        outcomes = []
        for data, verdict in zip(files, verdicts):
            barrier.wait(60)  # both processes store the same UID at the same moment
            outcomes.append(ingestor.core.put(data, verdict, sender="race", route="stow"))
        out.put([(o.stored, str(o.reason) if o.reason else None) for o in outcomes])


def test_two_processes_sending_one_uid_store_exactly_one_object(platform: Any) -> None:
    """Different objects with the same SOP Instance UIDs, from two processes at once.

    Each UID is sent by both processes at the same moment (a barrier per UID);
    without the UID lock both find it free and Orthanc stores both (checked: this
    test fails with the lock taken out).
    """
    firsts = [good_mr(30 + i) for i in range(12)]
    seconds = [elsewhere(data) for data in firsts]
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_ingest_all, args=(platform.settings, files, barrier, out))
             for files in (firsts, seconds)]
    for proc in procs:
        proc.start()
    answers = [out.get(timeout=300), out.get(timeout=300)]
    for proc in procs:
        proc.join(30)
    for index, data in enumerate(firsts):
        outcomes = [answer[index] for answer in answers]
        assert sorted(stored for stored, _ in outcomes) == [False, True], outcomes
        assert {reason for stored, reason in outcomes if not stored} == {
            "sop_instance_conflict"}, outcomes
        assert len(held(platform, str(_ds(data).SOPInstanceUID))) == 1


# ---------------------------------------------------------------- an archive filled before


def test_check_uids_reports_what_an_old_archive_holds_twice(platform: Any) -> None:
    original = good_mr(40)
    other = elsewhere(original)
    first = platform.store.store(original)["ID"]  # straight into Orthanc, as before the fix
    second = platform.store.store(other)["ID"]
    sop = str(_ds(original).SOPInstanceUID)
    assert sorted(held(platform, sop)) == sorted([first, second])

    report = duplicate_uids(platform.store)
    [entry] = [e for e in report["instances"] if e["sop_instance_uid"] == sop]
    assert sorted(c["orthanc_id"] for c in entry["copies"]) == sorted([first, second])
    assert {c["patient_id"] for c in entry["copies"]} == {_ds(original).PatientID,
                                                          _ds(other).PatientID}
    assert first in entry["repair"] and "DELETE /instances/" in entry["repair"]

    env = {**os.environ, "NEURONOVA_HOME": str(platform.settings.home),
           "NEURONOVA_ORTHANC_PORT": str(platform.settings.orthanc_port),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    code = "from neuronova_lib.cli import main; raise SystemExit(main())"
    done = subprocess.run([sys.executable, "-c", code, "check", "uids", "--json"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # something to repair
    assert sop in {e["sop_instance_uid"] for e in json.loads(done.stdout)["instances"]}
    text = subprocess.run([sys.executable, "-c", code, "check", "uids"], env=env,
                          capture_output=True, text=True, timeout=120).stdout
    assert f"SOP Instance UID {sop} is held 2 times" in text and second in text
    # Repaired as the report says: delete one copy; the UID is then held once.
    platform.store.session.delete(f"{platform.store.base_url}/instances/{second}",
                                  timeout=30).raise_for_status()
    assert sop not in {e["sop_instance_uid"] for e in duplicate_uids(platform.store)["instances"]}

