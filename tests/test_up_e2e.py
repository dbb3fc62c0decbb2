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


def _multipart_body(response: requests.Response) -> bytes:
    """The single part of a multipart/related frame answer."""
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    part = response.content.split(f"--{boundary}".encode())[1]
    return part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]


def test_up_serves_demo_data_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("PORT", "API_PORT", "PROXY_PORT", "ORTHANC_PORT")}
    env = {**os.environ, "NEURONOVA_HOME": str(tmp_path / "home"), "NEURONOVA_DEMO_SIZE": "small",
           **{f"NEURONOVA_{k}": str(v) for k, v in ports.items()}}
    env.pop("NEURONOVA_DEMO_PASSWORD", None)
    up = subprocess.Popen([*NEURONOVA, "up", "--cases", "1"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        deadline = time.monotonic() + 240
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

        status = subprocess.run([*NEURONOVA, "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("healthy") == 5  # orthanc, proxy, api, nginx-log, nginx
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
               "NEURONOVA_API_PORT": str(free_port()), "NEURONOVA_PROXY_PORT": str(free_port())}
        result = subprocess.run([*NEURONOVA, "up", "--no-demo"], env=env, capture_output=True,
                                text=True, timeout=120)
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "NEURONOVA_ORTHANC_PORT" in result.stderr
