"""`neuronova up` as a newcomer runs it: start, sign in, read images, stop with Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

from neuronova_lib import htj2k, wado
from neuronova_lib.stack.local import free_port
from neuronova_lib.stack.supervisor import port_free

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NEURONOVA = [sys.executable, "-m", "neuronova_lib.cli"]


def _platform_ports() -> dict[str, int]:
    """A free port for every listener `up` opens, the DICOM one included: a default port shared
    between these tests lets one test's Orthanc, still shutting down, fail the next one's start."""
    return {name: free_port() for name in (
        "PORT", "API_PORT", "PROXY_PORT", "ORTHANC_PORT", "DICOM_PORT", "MLFLOW_PORT",
        "DASK_PORT", "DASK_DASHBOARD_PORT", "OPENEMR_DEMO_PORT", "HUB_PORT", "HUB_API_PORT",
        "HUB_PROXY_API_PORT", "HUB_SERVICE_PORT", "DASHBOARDS_PORT")}


def _multipart_body(response: requests.Response) -> bytes:
    """The single part of a multipart/related frame answer."""
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    part = response.content.split(f"--{boundary}".encode())[1]
    return part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]


@pytest.mark.timeout(1200)  # trains the (short) demo model on first start
def test_up_serves_demo_data_and_stops_cleanly(tmp_path: Path) -> None:
    ports = _platform_ports()
    # The demo model as `up` makes it, kept short: a few steps on two cases, through a gate
    # whose thresholds are 0 here (the model's quality is test_ai_training_e2e's subject).
    demo_model = {"NEURONOVA_DEMO_MODEL_STEPS": "30", "NEURONOVA_DEMO_MODEL_CASES": "2",
                  **{f"NEURONOVA_GATE_MIN_DICE_{r}": "0" for r in ("TC", "WT", "ET")}}
    env = {**os.environ, "NEURONOVA_HOME": str(tmp_path / "home"), "NEURONOVA_DEMO_SIZE": "small",
           **demo_model, **{f"NEURONOVA_{k}": str(v) for k, v in ports.items()}}
    env.pop("NEURONOVA_DEMO_PASSWORD", None)
    up = subprocess.Popen([*NEURONOVA, "up", "--cases", "1"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        deadline = time.monotonic() + 900
        assert up.stdout is not None
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line and up.poll() is not None:
                pytest.fail("neuronova up exited early:\n" + "".join(output))
            output.append(line)
            if "Ctrl-C or `neuronova down`" in line:
                break
        else:
            pytest.fail("neuronova up did not come up:\n" + "".join(output))
        text = "".join(output)
        home = tmp_path / "home"
        users = json.loads((home / "demo-users.json").read_text())
        assert oct((home / "demo-users.json").stat().st_mode)[-3:] == "600"
        assert {u["username"] for u in users["users"]} == {"clinician", "scientist", "owner", "admin"}
        passwords = {u["username"]: u["password"] for u in users["users"]}
        assert len(set(passwords.values())) == 4, "each demo user has its own password"
        assert all(p in text for p in passwords.values()), "generated passwords are printed once"
        password = passwords["clinician"]
        url = f"http://127.0.0.1:{ports['PORT']}"

        # Sign in as clinician, list studies, fetch a frame, fetch it again with a signed URL.
        login = requests.post(f"{url}/api/auth/token",
                              data={"username": "clinician", "password": password}, timeout=10)
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        manifest = json.loads((home / "demo" / "small" / "manifest.json").read_text())
        case = manifest["cases"][0]
        studies = requests.get(f"{url}/api/pacs/dicom-web/studies", headers=auth, timeout=10)
        assert studies.status_code == 200
        assert case["study_instance_uid"] in {s["0020000D"]["Value"][0] for s in studies.json()}

        source = sorted((home / "demo" / "small").rglob("*.dcm"))[0]
        ds = pydicom.dcmread(source)
        frame_path = (f"/api/pacs/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                      f"/instances/{ds.SOPInstanceUID}/frames/1")
        accept = {"Accept": 'multipart/related; type="application/octet-stream"'}
        frame = requests.get(url + frame_path, headers={**auth, **accept}, timeout=10)
        assert frame.status_code == 200
        assert _multipart_body(frame) == ds.PixelData

        # Stored as HTJ2K lossless: as-stored frames are labelled so and decode bit-exact.
        stored = requests.get(url + frame_path, timeout=10,
                              headers={**auth, "Accept": accept["Accept"] + "; transfer-syntax=*"})
        [(label, codestream)] = wado.split_multipart(stored.content)
        assert label == htj2k.HTJ2K_LOSSLESS
        assert np.array_equal(htj2k.decode(codestream), ds.pixel_array)

        signed = requests.post(f"{url}/api/pacs/sign", headers=auth,
                               json={"study_uid": ds.StudyInstanceUID}, timeout=10).json()
        again = requests.get(f"{url}{frame_path}?{signed['query']}", headers=accept, timeout=10)
        assert again.status_code == 200 and _multipart_body(again) == ds.PixelData

        # The demo patient came through the chain (recorded OpenEMR → FHIR facade → cache)
        # and the study has its ImagingStudy, linked to that Patient.
        assert ("1 of 1 studies have a FHIR ImagingStudy (1 of their patients were on the "
                "FHIR server already)") in text
        record = requests.get(f"{url}/api/patients/{case['patient_id']}", headers=auth,
                              timeout=30)
        assert record.status_code == 200, record.text
        assert record.json()["source"] == "cache" and record.json()["on_fhir"]
        imaging = requests.get(f"{url}/fhir/R4/ImagingStudy", headers=auth, timeout=10, params={
            "subject": f"Patient/{record.json()['patient']['id']}"}).json()
        assert imaging["total"] == 1
        assert imaging["entry"][0]["resource"]["identifier"][0]["value"] == (
            f"urn:oid:{case['study_instance_uid']}")

        # The demo model was trained, promoted through the gate, and a clinician's analysis
        # of the demo study writes a SEG and an SR.
        assert "AI model:   brain-tumor-seg version 1, trained now" in text, text
        assert "promoted through the gate" in text
        job = requests.post(f"{url}/api/inference", headers=auth, timeout=30,
                            json={"study": case["study_instance_uid"]})
        assert job.status_code == 202, job.text
        job_url = f"{url}/api/inference/{job.json()['job_id']}"
        deadline = time.monotonic() + 300
        while (result := requests.get(job_url, headers=auth, timeout=30).json())["state"] not in (
                "done", "failed") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert result["state"] == "done", result
        assert result["model"]["version"] == "1" and set(result["volumes_ml"]) == {"TC", "WT", "ET"}
        assert "NOT FOR CLINICAL USE" in result["not_for_clinical_use"]

        status = subprocess.run([*NEURONOVA, "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 0, status.stdout + status.stderr
        # orthanc, dask-scheduler, dask-worker, openemr-demo, proxy, api, mlflow, hub-proxy,
        # jupyterhub, dashboards, nginx-log, nginx
        assert status.stdout.count("healthy") == 12
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)  # what Ctrl-C sends
        rest = up.communicate(timeout=60)[0]
    assert up.returncode == 0, rest
    assert "NeuroNova stopped." in rest
    for port in ports.values():
        assert port_free("127.0.0.1", port), f"port {port} still in use after Ctrl-C"


def test_up_explains_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "NEURONOVA_HOME": str(tmp_path / "home"),
               "NEURONOVA_ORTHANC_PORT": str(port), "NEURONOVA_PORT": str(free_port()),
               "NEURONOVA_API_PORT": str(free_port()), "NEURONOVA_PROXY_PORT": str(free_port()),
               "NEURONOVA_MLFLOW_PORT": str(free_port())}
        result = subprocess.run([*NEURONOVA, "up", "--no-demo"], env=env, capture_output=True,
                                text=True, timeout=120)
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "NEURONOVA_ORTHANC_PORT" in result.stderr


def _shell_without_ports(home: Path) -> dict[str, str]:
    """Another shell: the same data dir, none of the ports `up` was started with."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEURONOVA_")}
    env["NEURONOVA_HOME"] = str(home)
    return env


def test_status_and_down_find_the_platform_from_its_data_dir(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ports = _platform_ports()
    env = {**os.environ, "NEURONOVA_HOME": str(home),
           **{f"NEURONOVA_{k}": str(v) for k, v in ports.items()}}
    up = subprocess.Popen([*NEURONOVA, "up", "--no-demo"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        assert up.stdout is not None
        for line in up.stdout:
            output.append(line)
            if "Ctrl-C or `neuronova down`" in line:
                break
        else:
            pytest.fail("neuronova up did not come up:\n" + "".join(output))
        other = _shell_without_ports(home)
        status = subprocess.run([*NEURONOVA, "status"], env=other, capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count(" healthy ") == 12, status.stdout
        assert f"127.0.0.1:{ports['PORT']}/" in status.stdout
        state = json.loads((home / "run" / "stack.json").read_text())
        assert state["supervisor"] == up.pid
        for name, pid in state["services"].items():
            assert f"{name:10s} healthy  pid {pid} " in status.stdout

        # The same shell with the default ports set would probe the wrong ones: the record wins.
        misled = {**other, "NEURONOVA_PORT": str(free_port())}
        again = subprocess.run([*NEURONOVA, "status"], env=misled, capture_output=True,
                               text=True, timeout=60)
        assert again.returncode == 0 and again.stdout.count(" healthy ") == 12, again.stdout

        down = subprocess.run([*NEURONOVA, "down"], env=other, capture_output=True, text=True,
                              timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "NeuroNova stopped." in down.stdout
        assert up.wait(timeout=30) == 0
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            up.communicate(timeout=60)
    for port in ports.values():
        assert port_free("127.0.0.1", port), f"port {port} still in use after `neuronova down`"
    assert not (home / "run" / "stack.json").exists()
    after = subprocess.run([*NEURONOVA, "status"], env=_shell_without_ports(home),
                           capture_output=True, text=True, timeout=60)
    assert after.returncode == 1 and "no running platform" in after.stdout


def test_down_stops_services_left_by_a_killed_supervisor(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ports = _platform_ports()
    env = {**os.environ, "NEURONOVA_HOME": str(home),
           **{f"NEURONOVA_{k}": str(v) for k, v in ports.items()}}
    up = subprocess.Popen([*NEURONOVA, "up", "--no-demo"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        assert up.stdout is not None
        for line in up.stdout:
            output.append(line)
            if "Ctrl-C or `neuronova down`" in line:
                break
        else:
            pytest.fail("neuronova up did not come up:\n" + "".join(output))
        up.kill()  # no clean-up: the services keep running, orphaned
        up.wait(timeout=10)
        other = _shell_without_ports(home)
        status = subprocess.run([*NEURONOVA, "status"], env=other, capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 1 and "gone" in status.stdout, status.stdout
        down = subprocess.run([*NEURONOVA, "down"], env=other, capture_output=True, text=True,
                              timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert down.stdout.count("left running by a supervisor that is gone") == 12, down.stdout
    finally:
        if up.poll() is None:
            up.kill()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(port_free("127.0.0.1", p) for p in ports.values()):
        time.sleep(0.2)
    for port in ports.values():
        assert port_free("127.0.0.1", port), f"port {port} still in use after `neuronova down`"
