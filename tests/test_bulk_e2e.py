"""Bulk transcoding end to end: a real LocalCluster (2 worker processes) and the real Orthanc.

What a user would check: good instances end up in Orthanc as HTJ2K and decode
to the source's pixels; broken files are refused by the ingest gate on the
workers, reported and quarantined (route ``transcode``), not stored; a worker
killed or a cluster restarted mid-run does not lose or corrupt anything; a
second run changes nothing in Orthanc; a study is replaced in place with
every instance still there, and an interrupted replacement is finished from
its backup.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from orthanc_checks import assert_stored_as_htj2k
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from neuronova_lib.bulk import (
    OrthancAccess,
    WorkerConfig,
    local_client,
    process_batch,
    transcode_sources,
)
from neuronova_lib.bulk.sources import orthanc_item
from neuronova_lib.demo import write_demo_cases
from neuronova_lib.demo.phantom import SIZES
from neuronova_lib.ingest import Quarantine
from neuronova_lib.security.secret_store import orthanc_service_account
from neuronova_lib.transcode import transcode_to_htj2k

pytestmark = pytest.mark.e2e

SHAPE, SPACING = SIZES["small"]


@pytest.fixture(scope="module")
def cluster_client() -> Iterator[Any]:
    """Two single-threaded, non-daemonic worker processes (they start the gate's checker)."""
    with local_client(2, dashboard_address=":0") as client:
        yield client


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small demo studies (4 series × 40 slices each), one folder per case."""
    root = tmp_path_factory.mktemp("bulk-demo")
    infos = write_demo_cases(root, cases=3, seed=7301, shape=SHAPE, spacing=SPACING)
    return [info.directory / "dicom" for info in infos]


@pytest.fixture
def orthanc(platform: Any) -> OrthancAccess:
    return OrthancAccess.from_settings(platform.settings)  # type: ignore[return-value]


def _dcm(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm"))


def _last_change(orthanc: OrthancAccess) -> int:
    """Orthanc's change log position."""
    return int(orthanc.get_json("/changes?last")["Last"])


def _writes_since(orthanc: OrthancAccess, mark: int) -> list[str]:
    """Changes after ``mark`` that a store, delete or modification made.

    Orthanc also logs ``StableSeries``/``StableStudy``/``StablePatient`` on a
    timer (``StableAge`` after the last instance arrived): those are not writes.
    """
    answer = orthanc.get_json(f"/changes?since={mark}&limit=10000")
    assert answer["Done"]
    return [c["ChangeType"] for c in answer["Changes"]
            if not c["ChangeType"].startswith("Stable")]


def _with_new_uid(source: Path) -> pydicom.Dataset:
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _add_broken_files(folder: Path, model: Path) -> dict[str, Path]:
    """Bad inputs beside the good ones; each with its own SOP Instance UID."""
    broken = folder / "broken"
    broken.mkdir()
    files = {"not_dicom": broken / "notes.dcm", "truncated": broken / "truncated.dcm",
             "htj2k": broken / "already-htj2k.dcm", "ybr": broken / "ybr-one-sample.dcm",
             "palette": broken / "palette.dcm"}
    files["not_dicom"].write_text("scanner export log, not an image\n" * 20)
    whole = io.BytesIO()
    _with_new_uid(model).save_as(whole, enforce_file_format=True)
    files["truncated"].write_bytes(whole.getvalue()[:-3000])  # cut in the pixel data
    transcode_to_htj2k(_with_new_uid(model)).save_as(files["htj2k"], enforce_file_format=True)
    ybr = _with_new_uid(model)
    ybr.PhotometricInterpretation = "YBR_FULL"
    ybr.save_as(files["ybr"], enforce_file_format=True)
    palette = get_testdata_file("examples_palette.dcm")
    assert isinstance(palette, str)
    shutil.copy(palette, files["palette"])
    return files


def test_folder_with_broken_files_then_a_second_run_changes_nothing(
    platform: Any, orthanc: OrthancAccess, cluster_client: Any, cases: list[Path],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "incoming"
    shutil.copytree(cases[0], folder)
    good = _dcm(folder)
    broken = _add_broken_files(folder, good[0])
    manifest = tmp_path / "manifest.db"
    run: dict[str, Any] = {"settings": platform.settings, "client": cluster_client,
                           "manifest_path": manifest, "batch_size": 16}

    summary = transcode_sources([str(folder)], **run)

    assert summary.counts == {"pending": 0, "done": len(good), "skipped": 2, "failed": 3}
    assert summary.failure_reasons == {"length_exceeds_data": 1, "photometric_mismatch": 1,
                                       "sop_class_not_allowed": 1}
    assert summary.skip_reasons == {"already_htj2k": 1, "not_dicom": 1}
    assert summary.exit_code == 1 and summary.status == "failures"
    assert summary.this_run["ratio"] > 1.0
    assert summary.dashboard and requests.get(summary.dashboard, timeout=10).status_code == 200
    report = json.loads(Path(summary.report or "").read_text())
    reasons = {Path(f["locator"]).name: f["reason"] for f in report["failures"]}
    assert reasons == {"truncated.dcm": "length_exceeds_data",
                       "ybr-one-sample.dcm": "photometric_mismatch",
                       "palette.dcm": "sop_class_not_allowed"}
    assert all(f["message"] for f in report["failures"])
    # Each refused file is in the quarantine, byte for byte, with its route and reason.
    quarantine = Quarantine(platform.settings)
    for failure in report["failures"]:
        entry = quarantine.get(failure["quarantine_sha256"])
        assert entry is not None, failure
        assert entry.read_bytes() == Path(failure["locator"]).read_bytes()
        assert entry.reason == failure["reason"]
        assert entry.submissions[-1]["route"] == "transcode"
    for skipped in report["skipped"]:  # a README beside a series is left where it is
        assert skipped["quarantine_sha256"] is None
    assert {Path(s["locator"]).name: s["reason"] for s in report["skipped"]} == {
        "notes.dcm": "not_dicom", "already-htj2k.dcm": "already_htj2k"}

    for path in good:
        assert_stored_as_htj2k(orthanc, path)
    for name in ("truncated", "htj2k", "ybr"):  # nothing half-way: not stored at all
        uid = pydicom.dcmread(broken[name], force=True).SOPInstanceUID
        assert orthanc.find_instance(uid) is None, name

    # A second run: only the failed ones are tried again; Orthanc sees no change.
    mark = _last_change(orthanc)
    again = transcode_sources([str(folder)], **run)
    assert again.already_finished == len(good) + 2
    assert again.this_run["processed"] == 3 and again.counts == summary.counts
    # Without the manifest everything is redone: identical bytes, still no change.
    manifest.unlink()
    fresh = transcode_sources([str(folder)], **run)
    assert fresh.counts == summary.counts
    assert _writes_since(orthanc, mark) == []


def test_killed_worker_and_restarted_cluster_still_end_complete(
    platform: Any, orthanc: OrthancAccess, cluster_client: Any, cases: list[Path],
    tmp_path: Path,
) -> None:
    good = _dcm(cases[1])
    pids_before = set(cluster_client.run(os.getpid).values())
    seen = {"batches": 0}
    restarter: list[threading.Thread] = []

    def sabotage(results: list[dict[str, Any]]) -> None:
        seen["batches"] += 1
        if seen["batches"] == 2:  # kill one worker process outright, mid-run
            os.kill(next(iter(pids_before)), signal.SIGKILL)
        if seen["batches"] == 12:  # then restart every worker, from another thread
            restarter.append(threading.Thread(target=cluster_client.restart))
            restarter[0].start()

    summary = transcode_sources(
        [str(cases[1])], settings=platform.settings, client=cluster_client, batch_size=4,
        manifest_path=tmp_path / "manifest.db", on_batch=sabotage,
    )
    for thread in restarter:
        thread.join(60)

    assert seen["batches"] >= 12, "the run ended before the sabotage"
    assert summary.counts == {"pending": 0, "done": len(good), "skipped": 0, "failed": 0}
    assert summary.status == "complete" and summary.exit_code == 0
    assert summary.this_run["batches_resubmitted"] >= 1  # the restart cancelled batches
    assert not pids_before & set(cluster_client.run(os.getpid).values())
    for path in good:
        assert_stored_as_htj2k(orthanc, path)


def test_orthanc_study_replaced_in_place_with_nothing_lost(
    platform: Any, orthanc: OrthancAccess, cluster_client: Any, cases: list[Path],
    tmp_path: Path,
) -> None:
    files = _dcm(cases[2])
    ybr = _with_new_uid(files[0])  # Orthanc stores it; HTJ2K here does not take it
    ybr.PhotometricInterpretation = "YBR_FULL"
    ybr_path = tmp_path / "ybr.dcm"
    ybr.save_as(ybr_path, enforce_file_format=True)
    ids = {path: orthanc.store_file(path)["ID"] for path in [*files, ybr_path]}
    study_uid = str(ybr.StudyInstanceUID)
    study_id = orthanc.find_study(study_uid)
    assert study_id and len(orthanc.study_instances(study_id)) == len(files) + 1

    # Two replacements interrupted by a dead worker, as they would be on disk:
    # X after the original was deleted, Y after the HTJ2K copy was stored.
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    x, y = files[5], files[6]
    shutil.copy(x, backup_dir / f"{ids[x]}.dcm")
    orthanc.delete_instance(ids[x])
    shutil.copy(y, backup_dir / f"{ids[y]}.dcm")
    orthanc.delete_instance(ids[y])
    buffer = io.BytesIO()
    transcode_to_htj2k(pydicom.dcmread(y)).save_as(buffer, enforce_file_format=True)
    orthanc.store(buffer.getvalue())

    run: dict[str, Any] = {"settings": platform.settings, "client": cluster_client,
                           "backup_dir": backup_dir, "manifest_path": tmp_path / "manifest.db"}
    summary = transcode_sources([f"orthanc:{study_uid}"], **run)

    assert summary.counts == {"pending": 0, "done": len(files), "skipped": 0, "failed": 1}
    assert summary.failure_reasons == {"unsupported_photometric_interpretation": 1}
    assert summary.backups_left == 0 and not list(backup_dir.iterdir())
    instances = orthanc.study_instances(orthanc.find_study(study_uid) or "")
    assert {i["ID"] for i in instances} == set(ids.values())  # every instance, same ids
    for path in files:
        assert assert_stored_as_htj2k(orthanc, path) == ids[path]
    assert orthanc.instance_file(ids[ybr_path]) == ybr_path.read_bytes()  # failed: untouched

    mark = _last_change(orthanc)
    again = transcode_sources([f"orthanc:{study_uid}"], **run)
    assert again.this_run["processed"] == 1 and again.counts == summary.counts
    everything = transcode_sources(["orthanc:all"], dry_run=True, **run)
    assert everything.status == "dry_run" and everything.listed > len(files)
    assert everything.already_finished >= len(files)  # this study, from the manifest
    assert _writes_since(orthanc, mark) == []


def _worker_config(platform: Any, backup_dir: Path) -> WorkerConfig:
    account = orthanc_service_account(platform.settings.secrets_dir)
    return WorkerConfig(platform.settings.orthanc_url, account["username"],
                        account["password"], str(backup_dir))


def test_a_backup_that_disagrees_with_orthanc_is_reported_not_applied(
    platform: Any, orthanc: OrthancAccess, cases: list[Path], tmp_path: Path,
) -> None:
    path = _dcm(cases[2])[1]
    answer = orthanc.store_file(path)
    before = orthanc.instance_file(answer["ID"])
    stray = tmp_path / f"{answer['ID']}.dcm"
    _with_new_uid(path).save_as(stray, enforce_file_format=True)
    config = _worker_config(platform, tmp_path)
    assert str(config).count(config.password) == 0  # never in logs or the dashboard

    [result] = process_batch([orthanc_item({"ID": answer["ID"], "FileSize": 1}, "t")], config)

    assert result["state"] == "failed" and result["reason"] == "backup_conflict"
    assert result["backup"] == str(stray) and stray.exists()
    assert orthanc.instance_file(answer["ID"]) == before


def test_restore_puts_the_original_back_byte_for_byte(
    platform: Any, orthanc: OrthancAccess, cases: list[Path], tmp_path: Path,
) -> None:
    """What a worker does when storing the HTJ2K copy fails after the original was deleted."""
    from neuronova_lib.bulk.worker import _restore

    path = _dcm(cases[2])[2]
    original = _with_new_uid(path)
    buffer = io.BytesIO()
    original.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    iid = orthanc.store(data)["ID"]
    backup = tmp_path / f"{iid}.dcm"
    backup.write_bytes(data)

    orthanc.delete_instance(iid)  # deleted, nothing stored yet
    assert _restore(orthanc, iid, data, backup) is None
    assert orthanc.instance_file(iid) == data and not backup.exists()

    backup.write_bytes(data)  # a copy that re-read wrong is in Orthanc: replaced by the original
    orthanc.delete_instance(iid)
    htj2k = io.BytesIO()
    transcode_to_htj2k(original).save_as(htj2k, enforce_file_format=True)
    orthanc.store(htj2k.getvalue())
    assert _restore(orthanc, iid, data, backup) is None
    assert orthanc.instance_file(iid) == data and not backup.exists()


def test_command_line(platform: Any, cases: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "few"
    folder.mkdir()
    for path in _dcm(cases[0] / "t2")[:6]:
        shutil.copy(path, folder / path.name)
    env = {**os.environ, "NEURONOVA_HOME": str(platform.settings.home),
           "NEURONOVA_ORTHANC_PORT": str(platform.settings.orthanc_port)}
    cli = [sys.executable, "-m", "neuronova_lib.cli", "transcode"]

    dry = subprocess.run([*cli, str(folder), "--dry-run"], check=False, env=env,
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "6 to process" in dry.stdout and "nothing was changed" in dry.stdout

    report = tmp_path / "report.json"
    done = subprocess.run([*cli, str(folder), "--workers", "1", "--report", str(report)],
                          check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Dask dashboard: http" in done.stderr and "inst/s" in done.stderr
    assert "6 done" in done.stdout
    assert json.loads(report.read_text())["counts"]["done"] == 6

    missing = subprocess.run([*cli, str(tmp_path / "nope")], check=False, env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "neither a folder nor a file" in missing.stderr
