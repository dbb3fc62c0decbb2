"""The STOW-RS answer for mixed outcomes, and an ingest when Orthanc never answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_inputs import good_mr

from neuronova_lib.config import Settings
from neuronova_lib.ingest import Gate, Quarantine
from neuronova_lib.ingest.store import Ingestor, Outcome
from neuronova_lib.ingest.stow import (
    CANNOT_UNDERSTAND,
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    failure_reason,
    stow_response,
)
from neuronova_lib.orthanc_store import OrthancStore
from neuronova_lib.stack.local import free_port

BASE = "http://127.0.0.1:8080/api/pacs/dicom-web"


def outcome(stored: bool, reason: str | None = None, sop: str = "1.2.3") -> Outcome:
    return Outcome(stored, reason, "why", "ab" * 32, 10, "1.2.840.10008.5.1.4.1.1.4", sop,
                   "1.2", "1.2.9")


def test_status_follows_ps3_18() -> None:
    assert stow_response([outcome(True)], BASE)[0] == 200
    assert stow_response([outcome(True), outcome(False, "bad_bits")], BASE)[0] == 202
    assert stow_response([outcome(False, "nesting_too_deep")], BASE)[0] == 409


def test_body_references_and_failures() -> None:
    status, body, warnings = stow_response(
        [outcome(True, sop="1.2.3"), outcome(False, "sop_instance_conflict", sop="1.2.4"),
         Outcome(False, "not_dicom", "no DICM", "cd" * 32, 3)], BASE)
    assert status == 202
    assert body["00081190"]["Value"] == [f"{BASE}/studies/1.2"]
    (ref,) = body["00081199"]["Value"]
    assert ref["00081190"]["Value"] == [f"{BASE}/studies/1.2/series/1.2.9/instances/1.2.3"]
    conflict, unknown = body["00081198"]["Value"]
    assert conflict["00081197"]["Value"] == [DUPLICATE_SOP_INSTANCE]
    assert unknown["00081197"]["Value"] == [CANNOT_UNDERSTAND]
    assert unknown["00081155"] == {"vr": "UI"}  # unparseable: no UID to name
    assert warnings[0].startswith('299 neuronova "1.2.4: sop_instance_conflict: ')
    assert "sha256:cdcd" in warnings[1]


def test_warning_text_is_a_safe_quoted_string() -> None:
    bad = Outcome(False, "malformed", 'a "quote"\\ and\r\nnewline', "ef" * 32, 1)
    (warning,) = stow_response([bad], BASE)[2]
    inner = warning[len('299 neuronova "'):-1]
    assert '"' not in inner and "\\" not in inner and "\r" not in inner and "\n" not in inner


def test_failure_reason_codes() -> None:
    assert failure_reason("too_large") == OUT_OF_RESOURCES
    assert failure_reason("something_new") == CANNOT_UNDERSTAND


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", ingest_workers=1, ingest_orthanc_wait=1.5)


@pytest.mark.e2e  # starts processes
def test_orthanc_never_answering_is_reported_not_quarantined(settings: Settings) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with Gate(settings) as gate:
        ingestor = Ingestor(settings, gate,
                            store_factory=lambda: OrthancStore(dead, "u", "p", timeout=2))
        result = ingestor.ingest(good_mr(0), sender="admin", route="stow")
    assert not result.stored and result.reason == "orthanc_unavailable"
    assert result.attempts > 1 and "send it again" in result.message
    assert not result.quarantined and Quarantine(settings).list() == []


def test_the_core_needs_the_gates_acceptance(settings: Settings) -> None:
    """Nothing reaches the store step without the gate's verdict (its UIDs and Patient ID)."""
    from neuronova_lib.ingest.sandbox import Verdict
    from neuronova_lib.ingest.store import IngestCore

    core = IngestCore.from_settings(settings)
    refused = Verdict(False, "malformed", "no", "ab" * 32, 3)
    with pytest.raises(ValueError, match="verdict"):
        core.put(b"x", refused, sender="t", route="stow")
    no_patient = Verdict(True, None, "accepted", "ab" * 32, 3, "1.2", "1.3", "1.4", "1.5")
    with pytest.raises(ValueError, match="Patient ID"):
        core.put(b"x", no_patient, sender="t", route="stow")


@pytest.mark.e2e  # starts processes
def test_uid_locks_exclude_across_processes(tmp_path: Path) -> None:
    """A second process cannot take a UID's lock while the first holds it."""
    import subprocess
    import sys

    from neuronova_lib.ingest.uniqueness import UidLocks

    locks = UidLocks(tmp_path / "locks")
    marker = tmp_path / "marker"
    code = ("import sys, time, pathlib\n"
            "from neuronova_lib.ingest.uniqueness import UidLocks\n"
            "with UidLocks(sys.argv[1]).hold('sop', ['1.2.3']):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(1.0)\n"
            "    pathlib.Path(sys.argv[2]).write_text('released')\n")
    other = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "locks"), str(marker)],
                             stdout=subprocess.PIPE, text=True)
    assert other.stdout is not None and other.stdout.readline().strip() == "held"
    with locks.hold("sop", ["1.2.3"]):
        # Written by the other process just before it let go: we got the lock after that.
        assert marker.read_text() == "released"
    other.wait(30)
    with locks.hold("sop", ["1.2.3", "1.2.3"]), locks.hold("parent", ["1.2.3", "9.9"]):
        pass  # one stripe taken once; the kinds are separate: no self-deadlock
