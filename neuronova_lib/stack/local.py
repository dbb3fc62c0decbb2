"""A whole platform on free loopback ports in a folder of its own.

Tests and benchmarks use this to run the same processes as ``neuronova up``
(real Orthanc, guard, API and nginx) without touching a running platform.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from .platform import prepare_home
from .services import platform_services
from .supervisor import Supervisor


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalPlatform:
    settings: Settings
    supervisor: Supervisor
    demo_credentials: dict[str, str]

    @property
    def url(self) -> str:
        return self.settings.local_url


def local_settings(home: Path, **overrides: object) -> Settings:
    """Settings for a private platform in ``home`` with every port picked free."""
    values: dict[str, object] = {
        "home": home,
        "port": free_port(),
        "api_port": free_port(),
        "proxy_port": free_port(),
        "orthanc_port": free_port(),
        "dicom_port": free_port(),
        "mlflow_port": free_port(),
        "dask_port": free_port(),
        "dask_dashboard_port": free_port(),
        # Dask's scheduler and workers cost seconds and memory at each start: a test asks
        # for them (dask_enabled=True); without, upload jobs start a local cluster each.
        "dask_enabled": False,
        "dask_workers": 1,
        "openemr_demo_port": free_port(),
        # JupyterHub (and its proxy) only for the tests that ask (hub_enabled=True).
        "hub_enabled": False,
        "hub_port": free_port(),
        "hub_api_port": free_port(),
        "hub_proxy_api_port": free_port(),
        "hub_service_port": free_port(),
        # The Voilà dashboards only for the tests that ask (dashboards_enabled=True).
        "dashboards_enabled": False,
        "dashboards_port": free_port(),
        # Tests send bursts from one address; keep rate limiting on, but roomy.
        "api_rate": "200r/s",
        "api_burst": 400,
        # Likewise repeated refusals: counted in one audit row only after a roomy burst, so
        # that a test finds its own refusal's row by request id.
        "audit_repeat_burst": 200,
        "audit_client_rows": 20_000,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def local_platform(home: Path, *, watch: bool = False,
                   **overrides: object) -> Iterator[LocalPlatform]:
    """Start the platform, yield it healthy, stop it (also on failure).

    With ``watch`` a thread restarts services that die, as ``neuronova up`` does.
    """
    settings = local_settings(home, **overrides)
    credentials = prepare_home(settings) or {}
    supervisor = Supervisor(platform_services(settings), settings.log_dir)
    supervisor.start()
    watcher = None
    if watch:
        watcher = threading.Thread(target=supervisor.run_forever, kwargs={"poll": 0.2},
                                   name="platform-watch", daemon=True)
        watcher.start()
    try:
        yield LocalPlatform(settings, supervisor, credentials)
    finally:
        supervisor.stop()
        if watcher is not None:
            watcher.join(30)
