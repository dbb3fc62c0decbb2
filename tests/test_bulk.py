"""Bulk transcoding, the parts that need no cluster and no Orthanc.

Source specs, batching, the manifest's states across runs, the report, and
the worker's verdict on bad input (which it reaches before any Orthanc call).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

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
from neuronova_lib.bulk.worker import MAX_SEQUENCE_DEPTH, process_item
from neuronova_lib.config import Settings
from neuronova_lib.transcode import transcode_to_htj2k


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


def _config(tmp_path: Path) -> WorkerConfig:
    return WorkerConfig("http://127.0.0.1:9", "nobody", "secret", str(tmp_path / "backup"))


def _file(tmp_path: Path, name: str, ds: Dataset) -> Item:
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return next(parse_source(str(path)).items())


@pytest.mark.parametrize(
    ("make", "state", "reason"),
    [
        (lambda: None, "skipped", "not_dicom"),
        (lambda: transcode_to_htj2k(pydicom.dcmread(_testdata("MR_small.dcm"))),
         "skipped", "already_htj2k"),
        (lambda: pydicom.dcmread(_testdata("rtplan.dcm")), "skipped", "no_pixel_data"),
        (lambda: pydicom.dcmread(_testdata("examples_palette.dcm")), "failed",
         "unsupported_photometric_interpretation"),
        (lambda: pydicom.dcmread(_testdata("MR_truncated.dcm")), "failed",
         "truncated_pixel_data"),
    ],
    ids=["not-dicom", "htj2k", "no-pixels", "palette", "truncated"],
)
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


def _file_path(path: Path, data: bytes) -> Item:
    path.write_bytes(data)
    return next(parse_source(str(path)).items())


def test_unreadable_file_is_a_read_failure(tmp_path: Path) -> None:
    item = Item("file:gone", "file", str(tmp_path / "gone.dcm"), 0, "src")
    result = process_item(item, _config(tmp_path), _NOWHERE)
    assert result.state is State.FAILED and result.reason == "read_failed"
    assert "shared file system" in (result.message or "")


def test_deeply_nested_sequences_never_reach_orthanc(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_testdata("MR_small.dcm"))
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(MAX_SEQUENCE_DEPTH + 2):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds.ContentSequence = inner.ContentSequence
    result = process_item(_file(tmp_path, "nested.dcm", ds), _config(tmp_path), _NOWHERE)
    assert result.state is State.FAILED and result.reason == "sequence_nesting_too_deep"


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


def test_worker_results_are_plain_data(tmp_path: Path) -> None:
    """Results cross process boundaries and go into JSON: only plain types."""
    item = _file_path(tmp_path / "x.dcm", b"plain text")
    result = process_item(item, _config(tmp_path), _NOWHERE).as_dict()
    assert json.loads(json.dumps(result)) == result
    assert type(result["state"]) is str and type(result["reason"]) is str
