"""A real MLflow tracking server on a free loopback port, for tests of the AI code.

Used where a test needs MLflow without the whole platform (training, the registry and
its promotion gate); the platform's own MLflow service runs under the supervisor.
Import the fixture in a test module: ``from mlflow_fixture import mlflow_server``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from neuronova_lib.stack.local import free_port

#: mlflow server needs ~8 s here; more under load.
START_TIMEOUT = 120.0


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    # Without this, `mlflow server` starts a job runner of 7 processes (2.4 GB idle).
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    return env


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tracking URI of a fresh MLflow server (SQLite backend, local artifacts)."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        pytest.fail("mlflow is missing: run `make test` (it installs the `ai` extra)")
    root: Path = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=_server_env(), start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}: "
                            f"{(root / 'server.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy in {START_TIMEOUT:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
