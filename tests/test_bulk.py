"""Bulk transcoding, the parts that need no cluster and no Orthanc.

Source specs, batching, the manifest's states across runs, the report, and
the worker's verdict on bad input (which it reaches before any Orthanc call):
the real ingest gate (a spawned checker process) and a real quarantine folder.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from neuronova_lib.bulk import (
    BulkSetupError,
    Item,
    Manifest,
    ManifestBusyError,
    OrthancAccess,
    RunSummary,
    SourceError,
    State,
    WorkerConfig,
    batches,
    parse_source,
    parse_sources,
    transcode_sources,
)
from neuronova_lib.bulk.manifest import exclusive
from neuronova_lib.bulk.report import Tally, write_report
from neuronova_lib.bulk.sources import (
    BackupSource,
    FilesSource,
    FolderSource,
    OrthancSource,
    orthanc_item,
)
from neuronova_lib.bulk.worker import close_gate, gate_for, process_batch, process_item
from neuronova_lib.config import Settings
from neuronova_lib.ingest import GateConfig, Limits, Quarantine
from neuronova_lib.transcode import transcode_to_htj2k

from bad_inputs import bad_inputs, mr


def _testdata(name: str) -> Path:
    path = get_testdata_file(name)
    assert isinstance(path, str)
    return Path(path)


def _item(key: str, size: int = 10, kind: str = "file") -> Item:
    return Item(key, kind, f"/x/{key}", size, "src")  # type: ignore[arg-type]


# ---------------------------------------------------------------- sources


def test_folder_source_walks_recursively_in_order_and_leaves_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / ".cache").mkdir()
    for name in ("b/deep/2.dcm", "b/1.dcm", "a.dcm", ".hidden.dcm", ".cache/x.dcm"):
        (tmp_path / name).write_bytes(b"x" * 7)
    source = parse_source(str(tmp_path))
    assert isinstance(source, FolderSource)
    items = list(source.items())
    assert [Path(i.locator).relative_to(tmp_path).as_posix() for i in items] == [
        "a.dcm", "b/1.dcm", "b/deep/2.dcm"]
    assert all(i.kind == "file" and i.size == 7 and i.source == str(tmp_path) for i in items)


def test_a_file_key_changes_when_the_file_does(tmp_path: Path) -> None:
    path = tmp_path / "one.dcm"
    path.write_bytes(b"first")
    [before] = parse_source(str(path)).items()
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    [after] = parse_source(str(path)).items()
    assert before.key != after.key and before.locator == after.locator == str(path)


def test_list_file_source(tmp_path: Path) -> None:
    (tmp_path / "a.dcm").write_bytes(b"a")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# exported\n{tmp_path / 'a.dcm'}\n\n{tmp_path / 'gone.dcm'}\n")
    source = parse_source(f"@{listing}")
    assert isinstance(source, FilesSource)
    items = list(source.items())
    assert [Path(i.locator).name for i in items] == ["a.dcm", "gone.dcm"]
    assert items[1].key.endswith("|missing")  # kept, so the report names it


def test_orthanc_specs() -> None:
    assert parse_source("orthanc:all") == OrthancSource(None, "orthanc:all")
    source = parse_source("orthanc:1.2.3, 1.2.4")
    assert isinstance(source, OrthancSource) and source.study_uids == ("1.2.3", "1.2.4")
    for bad in ("orthanc:", "orthanc:1.2.x", "orthanc:" + "1." * 40 + "1"):
        with pytest.raises(SourceError):
            parse_source(bad)


def test_bad_specs_say_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="neither a folder nor a file"):
        parse_source(str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="cannot read the list"):
        parse_source(f"@{tmp_path / 'missing.txt'}")
    with pytest.raises(SourceError, match="at least one source"):
        parse_sources([])


def test_orthanc_item_and_backup_items_share_their_key(tmp_path: Path) -> None:
    (tmp_path / "abc-123.dcm").write_bytes(b"orig")
    (tmp_path / ".abc-123.dcm.77.tmp").write_bytes(b"half")  # a backup being written
    [backup] = BackupSource(tmp_path, "backups").items()
    listed = orthanc_item({"ID": "abc-123", "FileSize": 4}, "orthanc:all")
    assert backup.key == listed.key == "orthanc:abc-123"
    assert backup.kind == "orthanc" and backup.locator == "abc-123" and backup.size == 4
    assert list(BackupSource(tmp_path / "none", "b").items()) == []


# ---------------------------------------------------------------- batching


def test_batches_cap_count_and_bytes() -> None:
    items = [_item(f"k{i}", size) for i, size in enumerate([10, 10, 10, 50, 200, 5, 5])]
    got = [[i.key for i in b] for b in batches(items, max_items=3, max_bytes=60)]
    assert got == [["k0", "k1", "k2"], ["k3"], ["k4"], ["k5", "k6"]]
    assert list(batches([], 3, 60)) == []
    with pytest.raises(ValueError):
        list(batches(items, 0, 60))


# ---------------------------------------------------------------- manifest


def _result(key: str, state: State, reason: str | None = None, out: int = 0) -> dict:
    return {"key": key, "state": state.value, "reason": reason, "message": reason,
            "bytes_in": 100, "bytes_out": out}


def test_manifest_states_across_runs(tmp_path: Path) -> None:
    path = tmp_path / "bulk" / "manifest.db"
    items = [_item("a"), _item("b"), _item("c"), _item("d")]
    with Manifest(path) as m:
        m.start_run("r1", ["src"])
        assert m.discover(items + [items[0]], "r1") == 5
        assert m.counts("r1") == {"pending": 4, "done": 0, "skipped": 0, "failed": 0}
        assert [i.key for i in m.todo("r1", page=3)] == ["a", "b", "c", "d"]
        m.record([_result("a", State.DONE, out=40), _result("b", State.SKIPPED, "already_htj2k"),
                  _result("c", State.FAILED, "truncated_pixel_data")], "r1")
        m.finish_run("r1", "interrupted", {})
        assert m.reasons("r1", "failed") == {"truncated_pixel_data": 1}
    # A re-run (after a crash) lists the same items: only c (failed) and d (pending) are left.
    with Manifest(path) as m:
        m.discover(items, "r2")
        assert [i.key for i in m.todo("r2")] == ["c", "d"]
        row = m.get("a")
        assert row and row["state"] == "done" and row["attempts"] == 1 and row["run_id"] == "r1"
        m.record([_result("c", State.FAILED, "truncated_pixel_data"),
                  _result("d", State.DONE, out=30)], "r2")
        assert m.counts("r2") == {"pending": 0, "done": 2, "skipped": 1, "failed": 1}
        assert m.get("c")["attempts"] == 2  # type: ignore[index]


def test_an_orthanc_instance_changed_behind_the_manifest_is_pending_again(tmp_path: Path) -> None:
    with Manifest(tmp_path / "m.db") as m:
        item = orthanc_item({"ID": "i1", "FileSize": 500}, "orthanc:all")
        m.discover([item], "r1")
        m.record([_result(item.key, State.DONE, out=120)], "r1")
        m.discover([orthanc_item({"ID": "i1", "FileSize": 120}, "orthanc:all")], "r2")
        assert list(m.todo("r2")) == []  # Orthanc holds what was stored: done
        m.discover([orthanc_item({"ID": "i1", "FileSize": 500}, "orthanc:all")], "r3")
        assert [i.key for i in m.todo("r3")] == [item.key]  # someone put an original back


def test_todo_pages_do_not_repeat_or_skip(tmp_path: Path) -> None:
    with Manifest(tmp_path / "m.db") as m:
        m.discover((_item(f"k{i:04d}") for i in range(2500)), "r")
        seen = []
        for item in m.todo("r", page=700):
            seen.append(item.key)
            if len(seen) % 100 == 0:  # results recorded while walking
                m.record([_result(item.key, State.DONE)], "r")
        assert seen == [f"k{i:04d}" for i in range(2500)]


def test_readonly_manifest_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with Manifest(path, readonly=True) as m:
        assert m.states(["a"]) == {}
    assert not path.exists()
    with Manifest(path) as m:
        m.discover([_item("a")], "r")
    with Manifest(path, readonly=True) as m:
        assert m.states(["a", "b"]) == {"a": "pending"}
        with pytest.raises(Exception, match="readonly"):
            m.discover([_item("b")], "r")


def test_one_run_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    busy = pytest.raises(ManifestBusyError, match=f"pid {os.getpid()}")
    with exclusive(path), busy, exclusive(path):
        pass
    with exclusive(path):  # released
        pass


# ---------------------------------------------------------------- report


def _summary(run_id: str, counts: dict[str, int], status: str = "failures") -> RunSummary:
    return RunSummary(
        run_id=run_id, status=status, sources=["src"], counts=counts, listed=sum(counts.values()),
        already_finished=0,
        this_run={"processed": 3, "done": 1, "skipped": 1, "failed": 1, "bytes_in": 2_000_000,
                  "bytes_out": 500_000, "ratio": 4.0, "instances_per_s": 3.0, "mb_per_s": 2.0,
                  "batches_resubmitted": 0},
        failure_reasons={"truncated_pixel_data": 1}, skip_reasons={"not_dicom": 1},
        timings={"list": 0.1, "cluster": 1.0, "process": 1.0, "total": 2.1},
    )


def test_report_lists_every_failure_and_skip_with_its_reason(tmp_path: Path) -> None:
    with Manifest(tmp_path / "m.db") as m:
        m.discover([_item(f"k{i}") for i in range(1203)], "r")
        m.record([_result(f"k{i}", State.FAILED, "decode_failed") for i in range(1201)]
                 + [_result("k1201", State.SKIPPED, "not_dicom"),
                    _result("k1202", State.DONE, out=1)], "r")
        summary = _summary("r", m.counts("r"))
        report = json.loads(write_report(tmp_path / "out" / "r.json", summary, m).read_text())
    assert report["exit_code"] == 1 and report["counts"]["failed"] == 1201
    assert len(report["failures"]) == 1201  # more than one page of the manifest
    assert {f["reason"] for f in report["failures"]} == {"decode_failed"}
    assert report["failures"][0]["locator"] == "/x/k0"
    assert [s["reason"] for s in report["skipped"]] == ["not_dicom"]
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left


def test_summary_line_and_exit_codes() -> None:
    clean = _summary("r", {"pending": 0, "done": 5, "skipped": 1, "failed": 0}, "complete")
    assert clean.exit_code == 0
    line = clean.line()
    for part in ("5 done", "1 skipped (not_dicom 1)", "2.0 MB -> 0.5 MB", "ratio 4.00",
                 "3.0 inst/s"):
        assert part in line
    assert _summary("r", {"pending": 0, "done": 1, "skipped": 0, "failed": 2}).exit_code == 1
    assert _summary("r", {"pending": 3, "done": 1, "skipped": 0, "failed": 0},
                    "interrupted").exit_code == 130


def test_tally() -> None:
    tally = Tally()
    tally.add([_result("a", State.DONE, out=25), _result("b", State.FAILED, "x"),
               _result("c", State.SKIPPED, "already_htj2k")])
    assert (tally.processed, tally.done, tally.failed, tally.skipped) == (3, 1, 1, 1)
    assert tally.ratio == 4.0


# ---------------------------------------------------------------- worker verdicts before Orthanc

# An Orthanc nobody listens on: these inputs are refused before any request is made,
# so a test that reached Orthanc would fail with a connection error instead.
_NOWHERE = OrthancAccess("http://127.0.0.1:9", "nobody", "secret", timeout=1)


def _config(tmp_path: Path, route: str = "transcode", sender: str = "tester") -> WorkerConfig:
    return WorkerConfig("http://127.0.0.1:9", "nobody", "secret", str(tmp_path / "backup"),
                        quarantine_dir=str(tmp_path / "quarantine"), route=route, sender=sender,
                        orthanc_wait=1.0)


def _quarantine(tmp_path: Path) -> Quarantine:
    from datetime import timedelta

    return Quarantine(root=tmp_path / "quarantine", retention=timedelta(days=1))


def _file(tmp_path: Path, name: str, ds: Dataset) -> Item:
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return next(parse_source(str(path)).items())


def _rt_struct() -> Dataset:
    """An allowed SOP class without pixel data (RT Structure Set)."""
    ds = mr()
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.Modality = "RTSTRUCT"
    return ds


@pytest.mark.parametrize(
    ("make", "state", "reason"),
    [
        (lambda: None, "skipped", "not_dicom"),
        (lambda: transcode_to_htj2k(pydicom.dcmread(_testdata("MR_small.dcm"))),
         "skipped", "already_htj2k"),
        (_rt_struct, "skipped", "no_pixel_data"),
        (lambda: pydicom.dcmread(_testdata("rtplan.dcm")), "failed", "sop_class_not_allowed"),
        (lambda: pydicom.dcmread(_testdata("examples_palette.dcm")), "failed",
         "sop_class_not_allowed"),
        (lambda: pydicom.dcmread(_testdata("MR_truncated.dcm")), "failed",
         "pixel_length_mismatch"),
    ],
    ids=["not-dicom", "htj2k", "no-pixels", "rtplan", "palette", "truncated"],
)
@pytest.mark.e2e  # starts processes
def test_bad_input_is_classified_before_anything_is_stored(
    tmp_path: Path, make, state: str, reason: str,  # type: ignore[no-untyped-def]
) -> None:
    ds = make()
    if ds is None:
        item = _file_path(tmp_path / "readme.dcm", b"not an image\n" * 20)
    else:
        item = _file(tmp_path, "in.dcm", ds)
    result = process_item(item, _config(tmp_path), _NOWHERE).as_dict()
    assert (result["state"], result["reason"]) == (state, reason)
    assert result["message"] and result["bytes_in"] > 0 and result["worker"]
    entries = _quarantine(tmp_path).list()
    if state == "failed":  # refused by the gate: kept, named in the result
        [entry] = entries
        assert result["quarantine_sha256"] == entry.sha256
        assert entry.read_bytes() == Path(item.locator).read_bytes()
        assert entry.reason == reason
        assert entry.submissions[-1]["route"] == "transcode"
        assert entry.submissions[-1]["sender"] == "tester"
    else:  # a README beside a series, an image already HTJ2K: left alone
        assert entries == [] and result["quarantine_sha256"] is None


@pytest.mark.e2e  # starts processes
def test_every_findings_bad_input_is_refused_and_quarantined(tmp_path: Path) -> None:
    cases = bad_inputs()
    items = {name: _file_path(tmp_path / f"{name}.dcm", data)
             for name, (data, _) in cases.items()}
    results = process_batch(list(items.values()), _config(tmp_path, route="upload",
                                                          sender="admin"))
    assert len(results) == len(cases)
    store = _quarantine(tmp_path)
    for (name, (data, reason)), result in zip(cases.items(), results, strict=True):
        assert (result["state"], result["reason"]) == ("failed", reason), (name, result)
        entry = store.get(result["quarantine_sha256"])
        assert entry is not None and entry.read_bytes() == data, name
        assert entry.submissions[-1]["route"] == "upload"
        assert entry.submissions[-1]["sender"] == "admin"
    assert len(store.list()) == len(cases)


@pytest.mark.e2e  # process_batch starts the worker's gate (sandbox processes)
def test_not_dicom_from_an_upload_is_quarantined(tmp_path: Path) -> None:
    item = _file_path(tmp_path / "notes.txt", b"a note, not an image\n")
    result = process_item(item, _config(tmp_path, route="upload", sender="admin"), _NOWHERE)
    assert result.state is State.FAILED and result.reason == "not_dicom"
    entry = _quarantine(tmp_path).get(result.quarantine_sha256 or "")
    assert entry is not None and entry.read_bytes() == b"a note, not an image\n"
    assert entry.submissions[-1]["route"] == "upload"


def _file_path(path: Path, data: bytes) -> Item:
    path.write_bytes(data)
    return next(parse_source(str(path)).items())


@pytest.mark.e2e  # process_batch starts the worker's gate (sandbox processes)
def test_unreadable_file_is_a_read_failure(tmp_path: Path) -> None:
    item = Item("file:gone", "file", str(tmp_path / "gone.dcm"), 0, "src")
    result = process_item(item, _config(tmp_path), _NOWHERE)
    assert result.state is State.FAILED and result.reason == "read_failed"
    assert "shared file system" in (result.message or "")


@pytest.mark.e2e  # process_batch starts the worker's gate (sandbox processes)
def test_deeply_nested_sequences_never_reach_orthanc(tmp_path: Path) -> None:
    data, reason = bad_inputs()["nested_48"]
    result = process_item(_file_path(tmp_path / "nested.dcm", data), _config(tmp_path),
                          _NOWHERE)
    assert result.state is State.FAILED and result.reason == reason == "nesting_too_deep"
    assert result.quarantine_sha256 and _quarantine(tmp_path).get(result.quarantine_sha256)


@pytest.mark.e2e  # starts processes
def test_the_gate_follows_the_limits_in_the_config(tmp_path: Path) -> None:
    """Workers build the gate from WorkerConfig alone; other limits, another gate."""
    item = _file(tmp_path, "mr.dcm", mr())
    strict = WorkerConfig("http://127.0.0.1:9", "nobody", "secret", str(tmp_path / "b"),
                          gate=GateConfig(Limits(sop_classes=frozenset({"1.2.3"})), workers=1),
                          quarantine_dir=str(tmp_path / "quarantine"))
    try:
        result = process_item(item, strict, _NOWHERE)
        assert (result.state, result.reason) == (State.FAILED, "sop_class_not_allowed")
        first = gate_for(strict)
        assert gate_for(strict) is first and len(first.workers) == 1  # one checker per process
        # Accepted by the default limits: it gets as far as Orthanc (which is not there).
        result = process_item(item, _config(tmp_path), _NOWHERE)
        assert (result.state, result.reason) == (State.FAILED, "orthanc_unavailable")
        assert gate_for(_config(tmp_path)) is not first and first.workers == []
    finally:
        close_gate()


def _in_a_daemonic_process(items: list[Item], config: WorkerConfig, out: object) -> None:
    assert multiprocessing.current_process().daemon
    out.put([process_item(item, config, _NOWHERE).as_dict()  # type: ignore[attr-defined]
             for item in items])


@pytest.mark.e2e  # starts processes
def test_a_daemonic_worker_runs_the_gate(tmp_path: Path) -> None:
    """Dask's default (daemonic worker processes) runs the gate's checker program."""
    bad, reason = bad_inputs()["bits_allocated_0"]
    items = [_file(tmp_path, "mr.dcm", mr()), _file_path(tmp_path / "bad.dcm", bad)]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_in_a_daemonic_process, args=(items, _config(tmp_path), out),
                       daemon=True)
    proc.start()
    good, refused = out.get(timeout=120)
    proc.join(30)
    # Accepted by the gate: it gets as far as Orthanc (which is not there).
    assert (good["state"], good["reason"]) == ("failed", "orthanc_unavailable"), good
    assert (refused["state"], refused["reason"]) == ("failed", reason), refused
    assert _quarantine(tmp_path).get(refused["quarantine_sha256"]) is not None


@pytest.mark.e2e  # starts processes
def test_local_cluster_workers_run_the_gate_and_stop_it_on_shutdown(tmp_path: Path) -> None:
    from neuronova_lib.bulk import local_client

    data, reason = bad_inputs()["bits_allocated_0"]
    item = _file_path(tmp_path / "bad.dcm", data)
    started = time.monotonic()
    config = _config(tmp_path)
    with local_client(1, dashboard_address=":0") as client:
        [result] = client.submit(process_batch, [item], config, pure=False).result()
        [checkers] = client.run(lambda: gate_for(config).workers).values()
    assert time.monotonic() - started < 60, "the cluster took too long to shut down"
    assert (result["state"], result["reason"]) == ("failed", reason)
    assert _quarantine(tmp_path).get(result["quarantine_sha256"]) is not None
    assert len(checkers) == 1
    deadline = time.monotonic() + 10
    while _alive(checkers[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(checkers[0]), "the gate's checker outlived its Dask worker"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_an_old_manifest_gains_the_quarantine_column(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with sqlite3.connect(path) as db:  # a manifest of the previous version
        db.execute("CREATE TABLE instances (key TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                   "locator TEXT NOT NULL, source TEXT NOT NULL, size INTEGER NOT NULL "
                   "DEFAULT 0, state TEXT NOT NULL DEFAULT 'pending', reason TEXT, message "
                   "TEXT, bytes_in INTEGER, bytes_out INTEGER, sha256 TEXT, sop_instance_uid "
                   "TEXT, orthanc_id TEXT, backup TEXT, attempts INTEGER NOT NULL DEFAULT 0, "
                   "seen_run TEXT, run_id TEXT, created REAL NOT NULL, updated REAL NOT NULL)")
    db.close()
    with Manifest(path) as m:
        m.discover([_item("a")], "r")
        m.record([{**_result("a", State.FAILED, "bad_bits"), "quarantine_sha256": "ab" * 32}],
                 "r")
        assert m.get("a")["quarantine_sha256"] == "ab" * 32  # type: ignore[index]


def test_worker_config_hides_the_password(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert "secret" not in repr(config) and "secret" not in str(config)


# ---------------------------------------------------------------- front door


def test_setup_errors_come_before_any_work(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, orthanc_port=9)
    (tmp_path / "in").mkdir()
    with pytest.raises(BulkSetupError, match="at least 1"):
        transcode_sources([str(tmp_path / "in")], settings=settings, batch_size=0)
    with pytest.raises(BulkSetupError, match="does not answer"):
        transcode_sources([str(tmp_path / "in")], settings=settings)
    with pytest.raises(SourceError):
        transcode_sources([str(tmp_path / "nope")], settings=settings)
    assert not (tmp_path / "bulk").exists()


@pytest.mark.e2e  # process_batch starts the worker's gate (sandbox processes)
def test_worker_results_are_plain_data(tmp_path: Path) -> None:
    """Results cross process boundaries and go into JSON: only plain types."""
    item = _file_path(tmp_path / "x.dcm", b"plain text")
    result = process_item(item, _config(tmp_path), _NOWHERE).as_dict()
    assert json.loads(json.dumps(result)) == result
    assert type(result["state"]) is str and type(result["reason"]) is str


def test_the_command_line_transcodes_to_either_lossless_htj2k() -> None:
    """``--syntax``: HTJ2K lossless by default; RPCL (a tile-part per resolution) where
    viewers are to be sent reduced frames; nothing else."""
    from neuronova_lib.cli import build_parser
    from neuronova_lib.uids import HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL

    parser = build_parser()
    assert parser.parse_args(["transcode", "in"]).syntax == HTJ2K_LOSSLESS
    rpcl = parser.parse_args(["transcode", "in", "--syntax", HTJ2K_LOSSLESS_RPCL])
    assert rpcl.syntax == HTJ2K_LOSSLESS_RPCL
    with pytest.raises(SystemExit):
        parser.parse_args(["transcode", "in", "--syntax", "1.2.840.10008.1.2.4.203"])
