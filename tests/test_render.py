"""Rendered configs: nginx accepts its config, Orthanc's is valid JSON with the settings."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from neuronova_lib.config import Settings
from neuronova_lib.stack.render import render_nginx, render_orthanc


def test_orthanc_config(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, orthanc_port=18999, dicom_enabled=True,
                        dicom_modalities={"CT1": ["CT1", "10.0.0.5", 104]},
                        orthanc_postgres_uri="postgresql://u:p@127.0.0.1:5432/orthanc")
    path = render_orthanc(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = json.loads(path.read_text())
    assert config["HttpPort"] == 18999
    assert config["RemoteAccessAllowed"] is False
    assert config["AuthenticationEnabled"] is True
    assert list(config["RegisteredUsers"]) == ["neuronova-service"]
    # The platform's listener takes C-STORE; Orthanc's own stays off, knowing no modality.
    assert config["DicomServerEnabled"] is False and config["DicomAlwaysAllowStore"] is False
    assert config["DicomModalities"] == {}
    assert config["PostgreSQL"]["EnableIndex"] is True
    assert any(p.endswith("libOrthancPostgreSQLIndex.so") for p in config["Plugins"])
    assert config["DicomWeb"]["Enable"] is True


def test_orthanc_defaults_keep_the_dicom_listener_off(tmp_path: Path) -> None:
    config = json.loads(render_orthanc(Settings(home=tmp_path)).read_text())
    assert config["DicomServerEnabled"] is False
    assert "PostgreSQL" not in config


@pytest.mark.e2e  # starts processes
def test_nginx_accepts_the_rendered_config(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is missing: run `make test` (it installs Debian nginx)")
    settings = Settings(home=tmp_path)
    path = render_nginx(settings)
    text = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "internal;" in text and "Basic " in text
    result = subprocess.run([nginx, "-t", "-c", str(path), "-p", str(settings.run_dir),
                             "-e", str(tmp_path / "err.log")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
