"""FHIR servers for the patient chain's tests, each a real server on loopback:

- ``facade``: the platform's own API (its /fhir/R4 facade) under uvicorn in a thread;
- ``medplum``: Medplum's @medplum/fhir-router with its MemoryRepository behind Node's http
  module (tests/fhir_server, installed by `make test`), an independent implementation.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from neuronova_lib.config import Settings
from neuronova_lib.db.users import ensure_demo_users
from neuronova_lib.patients.fhir_client import BearerAuth
from neuronova_lib.security.tokens import token_service
from neuronova_lib.stack.local import free_port

NODE_SERVER = Path(__file__).resolve().parent / "fhir_server"


@dataclass
class FhirBackend:
    name: str
    base_url: str
    auth: httpx.Auth | None

    def count(self, system: str, value: str) -> int:
        """How many Patients carry this identifier (read straight from the server)."""
        response = httpx.get(f"{self.base_url}/Patient",
                             params={"identifier": f"{system}|{value}"}, auth=self.auth
                             or httpx.USE_CLIENT_DEFAULT, timeout=10)
        response.raise_for_status()
        return len(response.json().get("entry") or [])

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{self.base_url}/{resource['resourceType']}", json=resource,
                              auth=self.auth or httpx.USE_CLIENT_DEFAULT, timeout=10,
                              headers={"Content-Type": "application/fhir+json"})
        response.raise_for_status()
        return dict(response.json())

    def put(self, resource: dict[str, Any]) -> dict[str, Any]:
        response = httpx.put(f"{self.base_url}/{resource['resourceType']}/{resource['id']}",
                             json=resource, auth=self.auth or httpx.USE_CLIENT_DEFAULT,
                             timeout=10, headers={"Content-Type": "application/fhir+json"})
        response.raise_for_status()
        return dict(response.json())


@contextmanager
def serve_api(settings: Settings) -> Iterator[str]:
    """The platform API for ``settings`` under uvicorn in a thread; yields its base URL."""
    from services.api.app import create_app

    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.api_port,
                            log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the API did not start under uvicorn")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.api_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def api_settings(home: Path, **extra: Any) -> Settings:
    return Settings(home=home, api_port=free_port(), demo_password="fhir-test-password",
                    **extra)


@contextmanager
def facade_backend(home: Path) -> Iterator[FhirBackend]:
    settings = api_settings(home)
    ensure_demo_users(settings)
    with serve_api(settings) as url:
        tokens = token_service(settings)
        auth = BearerAuth(lambda: tokens.mint("clinician", "clinician", "access", 300)[0])
        yield FhirBackend("facade", f"{url}/fhir/R4", auth)


@contextmanager
def medplum_backend() -> Iterator[FhirBackend]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: run `make test` (scripts/install-system-deps.sh "
                    "installs Debian nodejs and npm)")
    if not (NODE_SERVER / "node_modules" / "@medplum" / "fhir-router").is_dir():
        pytest.fail("Medplum's fhir-router is not installed: run `make test` (it runs "
                    "`npm ci --prefix tests/fhir_server`)")
    process = subprocess.Popen([node, "server.mjs", "0"], cwd=NODE_SERVER,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # loading the definitions takes a few seconds
        if not line.startswith("listening "):
            pytest.fail(f"the Medplum FHIR server did not start: {line}"
                        f"{process.stdout.read()[-2000:] if process.poll() is not None else ''}")
        yield FhirBackend("medplum", f"http://127.0.0.1:{int(line.split()[1])}/fhir/R4", None)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
