"""Shared fixtures: a real platform (Orthanc, guard, API, nginx) on free loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import platform as host_platform
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

from neuronova_lib.config import get_settings

# Python's platform.processor() runs `uname -p` once per process and keeps the answer;
# MONAI and torch ask for it on first import. Ask here, before the process guard watches
# the unit tests, so that importing MONAI inside one is not counted as a process it started.
host_platform.processor()
from process_guard import pytest_runtest_setup, pytest_runtest_teardown  # noqa: F401 (hooks)

from neuronova_lib.db.users import demo_password
from neuronova_lib.orthanc_store import OrthancStore
from neuronova_lib.security.tokens import TokenService, token_service
from neuronova_lib.stack.local import LocalPlatform, local_platform

#: Fixtures shared by several modules: one MLflow server, one trained model (session), and
#: the browsers (tests/browser.py).
pytest_plugins = ["mlflow_fixture", "trained_model", "browser"]


@pytest.fixture(autouse=True)
def _fresh_settings_cache() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _need(binary: str, package: str) -> None:
    if shutil.which(binary) is None and not Path(f"/usr/sbin/{binary}").exists():
        pytest.fail(f"{binary} is missing: run `make test` (it installs Debian {package})")


@dataclass(frozen=True)
class StudyRef:
    study: str
    series: str
    instance: str

    @classmethod
    def of(cls, path: str) -> StudyRef:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return cls(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)

    def frame_path(self, frame: int = 1) -> str:
        return (f"/api/pacs/dicom-web/studies/{self.study}/series/{self.series}"
                f"/instances/{self.instance}/frames/{frame}")


def api_token(url: str, settings: Any, username: str) -> str:
    """An access token for a demo user, signed in with their password at ``POST
    /api/auth/token`` of the platform at ``url``."""
    response = requests.post(f"{url}/api/auth/token", timeout=30, data={
        "username": username, "password": demo_password(settings, username)})
    response.raise_for_status()
    return str(response.json()["access_token"])


@dataclass
class OnPlatform:
    """A test module's running platform and its demo users (the module adds its data)."""

    local: LocalPlatform

    @property
    def url(self) -> str:
        return self.local.url

    @property
    def settings(self) -> Any:
        return self.local.settings

    def password(self, username: str) -> str:
        """The demo user's own generated password (each demo user has its own)."""
        return demo_password(self.settings, username)

    def login(self, username: str) -> str:
        return api_token(self.url, self.settings, username)


@dataclass
class RunningPlatform(OnPlatform):
    tokens: TokenService
    store: OrthancStore
    study_a: StudyRef
    study_b: StudyRef

    def access_token(self, role: str = "clinician", **kwargs: Any) -> str:
        token, _ = self.tokens.mint(kwargs.pop("sub", role), role, "access",
                                    kwargs.pop("ttl", 300), **kwargs)
        return token

    def wait_for_audit(self, request_id: str, timeout: float = 5.0,
                       service: str | None = None) -> dict[str, Any]:
        """The audit record of one request (found by nginx's request id).

        The guard and the API share the id of a request both decide on (STOW-RS);
        ``service`` picks one ("proxy" or "api").
        """
        from sqlalchemy import select

        from neuronova_lib.db.engine import get_engine
        from neuronova_lib.db.models import AuditRecord

        engine = get_engine(self.settings.sqlalchemy_url)
        query = select(AuditRecord.__table__).where(AuditRecord.request_id == request_id)
        if service is not None:
            query = query.where(AuditRecord.service == service)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                row = conn.execute(query.order_by(AuditRecord.id)).mappings().first()
            if row:
                return dict(row)
            time.sleep(0.05)
        raise AssertionError(f"no {service or ''} audit record for request {request_id}")

    def nginx_log_entry(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """nginx's access log line of one request (the log is flushed every second)."""
        path = self.settings.log_dir / "nginx-access.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                for line in path.read_text().splitlines():
                    entry = json.loads(line)
                    if entry["request_id"] == request_id:
                        return entry
            time.sleep(0.1)
        raise AssertionError(f"no nginx log line for request {request_id}")


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """The whole platform, once per test session, with two small studies stored."""
    _need("Orthanc", "orthanc")
    _need("nginx", "nginx")
    home = tmp_path_factory.mktemp("neuronova-home")
    # Dask as `up` runs it: inference jobs and the /dask/ dashboard need the scheduler.
    with local_platform(home, watch=True, dask_enabled=True) as local:
        store = OrthancStore.from_settings(local.settings)
        files = [get_testdata_file("MR_small.dcm"), get_testdata_file("CT_small.dcm")]
        for path in files:
            store.store_file(path)
        yield RunningPlatform(
            local=local,
            tokens=token_service(local.settings),
            store=store,
            study_a=StudyRef.of(files[0]),
            study_b=StudyRef.of(files[1]),
        )


@pytest.fixture(scope="session")
def postgres_socket() -> Iterator[Path]:
    """A throwaway PostgreSQL cluster; yields the folder of its Unix socket (user postgres, trust)."""
    try:
        import psycopg
    except ImportError:
        pytest.fail("psycopg is missing: run `make test` (it installs the `postgres` extra, "
                    "pip install -e '.[postgres]')")
    # Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<version>/bin.
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    search = os.pathsep.join([os.environ.get("PATH", ""), *map(str, debian)])
    initdb, postgres = shutil.which("initdb", path=search), shutil.which("postgres", path=search)
    if not (initdb and postgres):
        pytest.fail("the PostgreSQL server (initdb, postgres) is missing: run `make test` "
                    "(scripts/install-system-deps.sh installs Debian `postgresql`)")
    run_as: dict[str, int] = {}
    workdir = Path(tempfile.mkdtemp(prefix="neuronova-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                run_as = {"user": entry.pw_uid, "group": entry.pw_gid}
                break
        else:
            pytest.fail("running as root and there is no 'postgres' or 'nobody' user to run "
                        "PostgreSQL as (Debian `postgresql` creates 'postgres')")
        os.chown(workdir, run_as["user"], run_as["group"])
    data, sock = workdir / "data", workdir
    subprocess.run(
        [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True, capture_output=True, **run_as,  # type: ignore[call-overload]
    )
    log = workdir / "postgres.log"
    with open(log, "wb") as log_handle:
        server = subprocess.Popen(
            [postgres, "-D", str(data), "-k", str(sock), "-c", "listen_addresses="],
            stdout=log_handle, stderr=subprocess.STDOUT, **run_as,  # type: ignore[call-overload]
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(f"host={sock} user=postgres dbname=postgres").close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("the throwaway PostgreSQL did not start:\n"
                                + log.read_text(errors="replace")[-2000:])
                time.sleep(0.2)
        yield sock
    finally:
        # SIGINT is PostgreSQL's fast shutdown: it does not wait for pooled clients to leave.
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
