"""Orthanc killed in the middle of a STOW-RS: it is restarted, and nothing is lost or half-stored.

The session platform runs with its supervisor watching (as ``neuronova up``
does). Orthanc is SIGKILLed once some instances of a request are stored; the
request must still end with every instance either stored (and then held by
Orthanc byte for byte) or reported as not stored.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from typing import Any

import pydicom
import pytest
import requests
from bad_inputs import good_mr
from test_stow_e2e import FAILED, failed_items, new_instances_since, referenced_uids, stow

INSTANCES = 240

pytestmark = pytest.mark.e2e  # the session platform; Orthanc is killed and restarted


def _uid(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def _wait_for_orthanc(platform: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            platform.store.get_json("/system")
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise AssertionError("Orthanc did not come back")


def test_orthanc_killed_mid_stow_comes_back_and_every_instance_is_stored_or_reported(
    platform: Any,
) -> None:
    files = [good_mr(i) for i in range(INSTANCES)]
    by_uid = {_uid(data): data for data in files}
    mark = int(platform.store.get_json("/changes?last")["Last"])
    answer: dict[str, requests.Response] = {}
    sender = threading.Thread(target=lambda: answer.update(r=stow(platform, files)))
    sender.start()

    # Kill Orthanc once a few instances of this request are in, well before the last.
    deadline = time.monotonic() + 120
    while len(new_instances_since(platform, mark)) < 5:
        assert time.monotonic() < deadline and sender.is_alive(), "the STOW never started storing"
        time.sleep(0.02)
    old_pid = platform.local.supervisor.pids()["orthanc"]
    before_kill = len(new_instances_since(platform, mark))
    os.kill(old_pid, signal.SIGKILL)
    assert before_kill < INSTANCES - 20, "killed too late to tell"
    killed_at = time.monotonic()
    sender.join(300)
    assert not sender.is_alive()

    response = answer["r"]
    assert response.status_code in (200, 202), response.text
    body = response.json()
    stored = referenced_uids(body)
    failed = [item["00081155"]["Value"][0] for item in failed_items(body)]
    # Every instance is accounted for, exactly once.
    assert sorted(stored + failed) == sorted(by_uid)
    _wait_for_orthanc(platform)
    new_pid = platform.local.supervisor.pids()["orthanc"]
    assert new_pid != old_pid, "the supervisor did not restart Orthanc"
    # Stored means held whole; reported means not stored, or stored whole.
    for uid in stored:
        iid = platform.store.find_instance(uid)
        assert iid is not None and platform.store.instance_file(iid) == by_uid[uid], uid
    for uid in failed:
        iid = platform.store.find_instance(uid)
        assert iid is None or platform.store.instance_file(iid) == by_uid[uid], uid
    if failed:
        assert FAILED in body and "orthanc_unavailable" in response.headers.get("Warning", "")
    row = platform.wait_for_audit(response.headers["X-Request-ID"], service="api")
    assert row["reason"] == "stow" and f"stored {len(stored)} of {INSTANCES}" in row["detail"]
    print(f"stored {len(stored)}, reported {len(failed)}; Orthanc back "
          f"{time.monotonic() - killed_at:.1f} s after the kill")
