"""The ingest gate: bad-input classes from FINDINGS refused, good files accepted,
crashing and hanging checkers contained, quarantine kept private."""

from __future__ import annotations

import io
import os
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from neuronova_lib.config import Settings
from neuronova_lib.ingest import REASONS, Gate, Limits, Quarantine, Refusal, check_bytes
from neuronova_lib.ingest.checks import scan_raw

from bad_inputs import (bad_inputs, dicom_bytes, mr, mr_htj2k, nested, raw_bytes)

CORPUS = Path(__file__).parent / "ingest_corpus"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("home"), ingest_workers=2,
                    ingest_timeout=20.0, ingest_cpu_seconds=10)


@pytest.fixture(scope="module")
def gate(settings: Settings) -> Gate:
    with Gate(settings) as g:
        yield g


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from neuronova_lib.demo import write_demo_cases
    from neuronova_lib.demo.phantom import SIZES

    out = tmp_path_factory.mktemp("demo")
    write_demo_cases(out, cases=1, shape=SIZES["small"][0], spacing=SIZES["small"][1])
    files = sorted(p for p in out.rglob("*.dcm"))
    assert files
    return files[len(files) // 2].read_bytes()


# --------------------------------------------------------------------------- pure checks


@pytest.mark.parametrize("name", sorted(bad_inputs()))
def test_bad_input_classes_refused_by_checks(name: str) -> None:
    data, reason = bad_inputs()[name]
    with pytest.raises(Refusal) as info:
        check_bytes(data)
    assert info.value.reason == reason, info.value.message
    assert reason in REASONS


def test_nested_file_is_about_10kb_and_counted_from_raw_bytes() -> None:
    data = nested(48)
    assert 9_000 <= len(data) <= 16_000  # MR_small (10 KB) + 48 levels
    with pytest.raises(Refusal) as info:
        scan_raw(data, Limits())
    assert info.value.reason == "nesting_too_deep"


@pytest.mark.parametrize("implicit", [False, True])
def test_nesting_cap_boundary(implicit: bool) -> None:
    def build(depth: int) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(nested(depth, pad_to=0)))
        return dicom_bytes(ds, implicit=implicit)

    assert scan_raw(build(16), Limits()).max_depth == 16
    check_bytes(build(16))
    with pytest.raises(Refusal) as info:
        check_bytes(build(17))
    assert info.value.reason == "nesting_too_deep"
    with pytest.raises(Refusal):
        check_bytes(build(8), Limits(max_depth=4))


def test_framing_size_and_structure() -> None:
    good = dicom_bytes(mr())

    cases = {
        b"hello, not DICOM" * 20: "not_dicom",
        b"": "not_dicom",
        good[132:]: "no_preamble",
        good[:-100]: "length_exceeds_data",
        good[:200]: "length_exceeds_data",
    }
    for data, reason in cases.items():
        with pytest.raises(Refusal) as info:
            check_bytes(data)
        assert info.value.reason == reason, info.value.message

    with pytest.raises(Refusal) as info:
        check_bytes(good, Limits(max_bytes=4096))
    assert info.value.reason == "too_large"
    with pytest.raises(Refusal) as info:
        check_bytes(good, Limits(max_elements=20))
    assert info.value.reason == "too_many_elements"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_identity_checks() -> None:
    def refused(ds: Dataset, reason: str, limits: Limits | None = None) -> None:
        with pytest.raises(Refusal) as info:
            check_bytes(raw_bytes(ds), limits)
        assert info.value.reason == reason, info.value.message

    ds = mr()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    refused(ds, "sop_class_not_allowed")
    refused(mr(), "sop_class_not_allowed", Limits(sop_classes=frozenset({"1.2.3"})))
    for keyword, value in [("SOPInstanceUID", "1.2.03.4"), ("StudyInstanceUID", "1." * 40 + "1"),
                           ("SeriesInstanceUID", "1.2.abc")]:
        ds = mr()
        setattr(ds, keyword, value)
        refused(ds, "bad_uid")
    ds = mr()
    del ds.SeriesInstanceUID
    refused(ds, "bad_uid")
    ds = mr()
    ds.PatientID = ""
    refused(ds, "no_patient_id")
    ds = mr()
    del ds.PixelData
    refused(ds, "no_pixel_data")


def test_pixel_module_checks() -> None:
    def refused(change: dict, reason: str) -> None:
        ds = mr()
        for key, value in change.items():
            setattr(ds, key, value)
        with pytest.raises(Refusal) as info:
            check_bytes(raw_bytes(ds))
        assert info.value.reason == reason, (change, info.value.message)

    refused({"BitsStored": 17}, "bad_bits")
    refused({"HighBit": 3}, "bad_bits")
    refused({"BitsAllocated": 12}, "bad_bits")
    refused({"SamplesPerPixel": 3}, "photometric_mismatch")  # MONOCHROME2 with 3 samples
    refused({"PhotometricInterpretation": "RGB"}, "photometric_mismatch")
    refused({"PhotometricInterpretation": "PALETTE COLOR"}, "photometric_mismatch")
    refused({"PhotometricInterpretation": "BOGUS"}, "photometric_mismatch")
    refused({"Rows": 0}, "bad_dimensions")
    refused({"NumberOfFrames": 2}, "pixel_length_mismatch")
    refused({"Rows": 63}, "pixel_length_mismatch")
    ds = mr()
    ds.PixelData = ds.PixelData[:-64]
    with pytest.raises(Refusal) as info:
        check_bytes(raw_bytes(ds))
    assert info.value.reason == "pixel_length_mismatch"
    # Encapsulated: fewer fragments than frames.
    ds = mr_htj2k()
    ds.NumberOfFrames = 3
    with pytest.raises(Refusal) as info:
        check_bytes(raw_bytes(ds))
    assert info.value.reason == "pixel_length_mismatch"


@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm", "MR_small_bigendian.dcm",
                                  "SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm",
                                  "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_rle.dcm"])
def test_good_testdata_accepted_by_checks(name: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    accepted = check_bytes(data)
    assert accepted.sop_instance_uid


def test_deflated_walked_and_parsed() -> None:
    data = Path(get_testdata_file("image_dfl.dcm")).read_bytes()
    with pytest.raises(Refusal) as info:  # inflated, walked, parsed: it lacks a Patient ID
        check_bytes(data)
    assert info.value.reason == "no_patient_id"
    with pytest.raises(Refusal) as info:
        check_bytes(data, Limits(max_bytes=len(data) + 100))  # inflates past the cap
    assert info.value.reason == "too_large"


def test_htj2k_and_implicit_accepted_all_frames() -> None:
    check_bytes(dicom_bytes(mr_htj2k()), Limits(decode_all_frames=True))
    check_bytes(dicom_bytes(mr(), implicit=True))


# --------------------------------------------------------------------------- the sandboxed gate


@pytest.mark.e2e  # starts processes
def test_gate_refuses_each_bad_input_class(gate: Gate) -> None:
    cases = bad_inputs()
    verdicts = gate.check_many([data for data, _ in cases.values()])
    for (name, (data, reason)), verdict in zip(cases.items(), verdicts):
        assert not verdict.accepted, name
        assert verdict.reason == reason, (name, verdict.message)
        assert verdict.size == len(data) and len(verdict.sha256) == 64


@pytest.mark.e2e  # starts processes
def test_gate_accepts_good_files(gate: Gate, demo_file: bytes) -> None:
    good = [
        Path(get_testdata_file("MR_small.dcm")).read_bytes(),
        Path(get_testdata_file("CT_small.dcm")).read_bytes(),
        dicom_bytes(mr_htj2k()),
        demo_file,
    ]
    verdicts = gate.check_many(good)
    for verdict in verdicts:
        assert verdict.accepted, verdict.message
        assert verdict.reason is None
        assert verdict.sop_instance_uid and verdict.study_uid and verdict.series_uid
    assert verdicts[0].sop_instance_uid == mr().SOPInstanceUID
    assert verdicts[2].transfer_syntax.startswith("1.2.840.10008.1.2.4.20")


@pytest.mark.e2e  # starts processes
def test_gate_too_large_refused_without_worker(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, ingest_max_bytes=4096)
    with Gate(settings) as g:
        verdict = g.check(Path(get_testdata_file("CT_small.dcm")).read_bytes())
        assert (verdict.accepted, verdict.reason) == (False, "too_large")
        assert g.workers == []


# Extra checks run in the worker (importable by name: this module is on sys.path).
def abort_on_marker(ds: Dataset, data: bytes) -> None:
    if getattr(ds, "ImageComments", "") == "CRASH":
        os.abort()


def spin_on_marker(ds: Dataset, data: bytes) -> None:
    if getattr(ds, "ImageComments", "") == "SPIN":
        while True:
            pass


def sleep_on_marker(ds: Dataset, data: bytes) -> None:
    if getattr(ds, "ImageComments", "") == "SLEEP":
        time.sleep(3600)


def allocate_on_marker(ds: Dataset, data: bytes) -> None:
    if getattr(ds, "ImageComments", "") == "ALLOCATE":
        blocks = []
        while True:
            blocks.append(bytearray(256 * 1024**2))


def _marked(text: str) -> bytes:
    ds = mr()
    ds.ImageComments = text
    return dicom_bytes(ds)


@pytest.mark.e2e  # starts processes
@pytest.mark.slow
def test_crash_hang_and_memory_are_refusals_caller_alive(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, ingest_workers=1, ingest_timeout=4.0,
                        ingest_cpu_seconds=2, ingest_memory_bytes=1024**3)
    good = dicom_bytes(mr())
    checks = (abort_on_marker, spin_on_marker, sleep_on_marker, allocate_on_marker)
    with Gate(settings, extra_checks=checks) as g:
        assert g.check(good).accepted
        first_pid = g.workers[0]
        expected = {"CRASH": "checker_crashed", "SPIN": "checker_timeout",
                    "SLEEP": "checker_timeout", "ALLOCATE": "checker_out_of_memory"}
        for marker, reason in expected.items():
            started = time.monotonic()
            verdict = g.check(_marked(marker))
            assert (verdict.accepted, verdict.reason) == (False, reason), verdict.message
            assert time.monotonic() - started < 15
            # The caller is alive and a fresh worker takes the next file.
            assert g.check(good).accepted
        assert g.workers and g.workers[0] != first_pid


@pytest.mark.e2e  # starts processes
def test_check_many_runs_in_parallel_workers(gate: Gate) -> None:
    data = [dicom_bytes(mr())] * 6
    assert all(v.accepted for v in gate.check_many(data))
    assert len(gate.workers) == 2


@pytest.mark.e2e  # starts processes
def test_corpus_regressions_replayed(gate: Gate) -> None:
    """Inputs that once broke the gate (from the fuzz test) now answer cleanly."""
    files = sorted(CORPUS.glob("*.dcm")) if CORPUS.is_dir() else []
    verdicts = gate.check_many([f.read_bytes() for f in files])
    for path, verdict in zip(files, verdicts):
        assert verdict.reason not in ("checker_crashed", "checker_timeout",
                                      "checker_out_of_memory"), (path.name, verdict.message)
        expected = path.with_suffix(".reason")  # optional: the reason code, or "accepted"
        if expected.exists():
            want = expected.read_text().strip()
            assert (verdict.reason or "accepted") == want, (path.name, verdict.message)


# --------------------------------------------------------------------------- quarantine


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.e2e  # starts processes
def test_quarantine_round_trip(tmp_path: Path, gate: Gate) -> None:
    settings = Settings(home=tmp_path, quarantine_retention_days=7)
    store = Quarantine(settings)
    data, _ = bad_inputs()["ybr_one_sample"]
    verdict = gate.check(data)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    entry = store.put(data, verdict, sender="alice", route="stow", when=t0)
    assert entry.sha256 == verdict.sha256 and entry.reason == "photometric_mismatch"
    again = store.put(data, "photometric_mismatch", "again", sender="bob", route="upload",
                      when=t0 + timedelta(days=1))
    assert [s["sender"] for s in again.submissions] == ["alice", "bob"]
    assert [s["route"] for s in again.submissions] == ["stow", "upload"]
    assert again.first_seen == t0 and again.last_seen == t0 + timedelta(days=1)

    root = tmp_path / "quarantine"
    assert root == settings.quarantine_dir
    assert _mode(root) == 0o700 and _mode(entry.path.parent) == 0o700
    files = [p for p in root.rglob("*") if p.is_file() and p.name != ".lock"]
    assert len(files) == 2  # one blob, one sidecar: stored once
    assert all(_mode(p) == 0o600 for p in files)
    assert store.get(verdict.sha256).read_bytes() == data

    other = b"not dicom at all"
    store.put(other, "not_dicom", "x", sender="carol", route="upload",
              when=t0 + timedelta(days=20))
    assert [e.sha256 for e in store.list()][1] == verdict.sha256
    removed = store.purge(now=t0 + timedelta(days=10))  # retention 7 days
    assert removed == [verdict.sha256]
    assert store.get(verdict.sha256) is None
    assert len(store.list()) == 1
    assert store.purge(timedelta(days=0), now=t0 + timedelta(days=30)) != []
    assert store.list() == []
    with pytest.raises(ValueError):
        store.get("../../etc/passwd")
    assert store.delete("0" * 64) is False


@pytest.mark.e2e  # starts processes
@pytest.mark.slow
def test_check_many_survives_workers_dying_while_others_wait(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, ingest_workers=2, ingest_timeout=10.0)
    good, crash = dicom_bytes(mr()), _marked("CRASH")
    with Gate(settings, extra_checks=(abort_on_marker,)) as g:
        verdicts = g.check_many([crash, crash, good, crash, good, good])
    assert [v.reason for v in verdicts] == ["checker_crashed"] * 2 + [None] + \
        ["checker_crashed"] + [None, None]


def test_limits_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEURONOVA_HOME", str(tmp_path))
    monkeypatch.setenv("NEURONOVA_INGEST_MAX_DEPTH", "4")
    monkeypatch.setenv("NEURONOVA_INGEST_SOP_CLASSES", '["1.2.840.10008.5.1.4.1.1.2"]')
    monkeypatch.setenv("NEURONOVA_QUARANTINE_RETENTION_DAYS", "2.5")
    settings = Settings()
    limits = Limits.from_settings(settings)
    assert limits.max_depth == 4 and limits.sop_classes == {"1.2.840.10008.5.1.4.1.1.2"}
    assert Quarantine(settings).retention == timedelta(days=2.5)
    assert settings.quarantine_dir == tmp_path.resolve() / "quarantine"
    with pytest.raises(Refusal) as info:
        check_bytes(dicom_bytes(mr()), limits)
    assert info.value.reason == "sop_class_not_allowed"
