"""The platform's processes: how each starts and how its health is probed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

import requests

from ..compute import DASHBOARD_PREFIX, own_scheduler
from ..config import REPO_ROOT, Settings
from ..security.secret_store import orthanc_service_account
from .render import nginx_log_socket, render_nginx, render_orthanc
from .supervisor import Service

PROBE_TIMEOUT = 2.0
#: Dask's statistical profiler samples each running task every 10 ms and tells nothing
#: here (CPU-bound codecs); its own logs at INFO narrate every start and stop.
DASK_ENV = {"DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
            "DASK_LOGGING__DISTRIBUTED": "warning"}


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``NEURONOVA_*`` variables, so every child sees the same config."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, (dict, list)):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"NEURONOVA_{name.upper()}"] = text
    return env


def _ok(url: str, auth: tuple[str, str] | None = None) -> bool:
    return requests.get(url, timeout=PROBE_TIMEOUT, auth=auth).status_code == 200


def _binary(name: str) -> str:
    """Debian puts Orthanc and nginx in /usr/sbin, which a user's PATH may lack."""
    if shutil.which(name):
        return name
    sbin = Path("/usr/sbin") / name
    return str(sbin) if sbin.exists() else name  # a missing one is reported with its fix


def uvicorn_argv(factory: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "--factory", factory,
        "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--no-server-header", "--timeout-graceful-shutdown", "5",
    ]


def orthanc_service(settings: Settings) -> Service:
    account = orthanc_service_account(settings.secrets_dir)
    config = settings.run_dir / "orthanc.json"
    ports = [("0.0.0.0", settings.orthanc_port, "NEURONOVA_ORTHANC_PORT")]
    return Service(
        name="orthanc",
        argv=[_binary("Orthanc"), str(config)],
        prepare=lambda: render_orthanc(settings),
        health=lambda: _ok(f"{settings.orthanc_url}/system",
                           (account["username"], account["password"])),
        ports=ports,
        start_timeout=90.0,
    )


def _uvicorn_service(settings: Settings, name: str, factory: str, port: int,
                     health_path: str, variable: str) -> Service:
    return Service(
        name=name,
        argv=uvicorn_argv(factory, port),
        env=settings_env(settings),
        cwd=REPO_ROOT,
        health=lambda: _ok(f"http://127.0.0.1:{port}{health_path}"),
        ports=[("127.0.0.1", port, variable)],
    )


def proxy_service(settings: Settings) -> Service:
    return _uvicorn_service(settings, "proxy", "services.proxy.app:create_app",
                            settings.proxy_port, "/api/pacs/health", "NEURONOVA_PROXY_PORT")


def api_service(settings: Settings) -> Service:
    return _uvicorn_service(settings, "api", "services.api.app:create_app",
                            settings.api_port, "/api/health", "NEURONOVA_API_PORT")


def dicom_service(settings: Settings) -> Service:
    """The platform's DICOM listener (C-STORE through the ingest gate); healthy when it echoes."""
    from ..dimse.probe import echo

    host = "127.0.0.1" if settings.dicom_host in ("0.0.0.0", "::", "") else settings.dicom_host
    return Service(
        name="dicom",
        argv=[sys.executable, "-m", "neuronova_lib.dimse"],
        env=settings_env(settings),
        cwd=REPO_ROOT,
        health=lambda: echo(host, settings.dicom_port, settings.dicom_aet, PROBE_TIMEOUT),
        ports=[(settings.dicom_host, settings.dicom_port, "NEURONOVA_DICOM_PORT")],
    )


#: MLflow's UI, REST API and GraphQL live under this path, in MLflow and behind nginx alike.
MLFLOW_PREFIX = "/mlflow"


def mlflow_allowed_hosts(settings: Settings) -> str:
    """``--allowed-hosts``: the Host headers MLflow answers (it refuses others: DNS rebinding).

    Loopback with any port (the promotion gate and the health probe talk to it
    directly) and the public host, which nginx passes on (``Host $host``).
    """
    hosts = ["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*"]
    public = urlsplit(settings.public_url)
    for name in (public.hostname, settings.host):
        if name and name not in ("0.0.0.0", "::") and name not in hosts:
            hosts += [name, f"{name}:*"]
    return ",".join(hosts)


def mlflow_env() -> dict[str, str]:
    """What every MLflow server of the platform runs with (see FINDINGS: 7 idle job
    processes and 2.4 GB without the first; no telemetry leaves the machine)."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true"}


def _prepare_mlflow(settings: Settings) -> None:
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    if "://" not in settings.mlflow_artifacts:
        Path(settings.mlflow_artifacts).mkdir(parents=True, exist_ok=True)


def mlflow_service(settings: Settings) -> Service:
    """MLflow's tracking server on loopback, under ``/mlflow`` (nginx keeps the prefix).

    Artifacts are served through the server (``--serve-artifacts``), so clients
    need only the tracking URI and their token, never the store's credentials.
    """
    return Service(
        name="mlflow",
        argv=[sys.executable, "-m", "mlflow", "server",
              "--backend-store-uri", settings.mlflow_backend_uri,
              "--serve-artifacts", "--artifacts-destination", settings.mlflow_artifacts,
              "--host", "127.0.0.1", "--port", str(settings.mlflow_port), "--workers", "1",
              "--static-prefix", MLFLOW_PREFIX,
              "--allowed-hosts", mlflow_allowed_hosts(settings),
              "--cors-allowed-origins", settings.public_origin,
              # nginx's access log has every request already (with its request id).
              "--uvicorn-opts", "--no-access-log"],
        env=mlflow_env(),
        cwd=settings.mlflow_dir,
        prepare=lambda: _prepare_mlflow(settings),
        health=lambda: _ok(f"{settings.mlflow_url}/health"),
        ports=[("127.0.0.1", settings.mlflow_port, "NEURONOVA_MLFLOW_PORT")],
        start_timeout=180.0,
    )


def nginx_log_service(settings: Settings) -> Service:
    """Writes nginx's error log with token material removed (see ``nginx_log``)."""
    sock = nginx_log_socket(settings)
    return Service(
        name="nginx-log",
        argv=[sys.executable, "-m", "neuronova_lib.stack.nginx_log", str(sock),
              str(settings.log_dir / "nginx-error.log")],
        cwd=REPO_ROOT,
        prepare=lambda: sock.unlink(missing_ok=True),
        health=sock.exists,
    )


def nginx_service(settings: Settings) -> Service:
    config = settings.run_dir / "nginx.conf"
    return Service(
        name="nginx",
        # -e: nginx keeps its start-up log open beside the configured one and copies every
        # [error] line (with the request line as sent) there. Start-up errors still reach
        # stderr, which the supervisor keeps in logs/nginx.log; see nginx_log for the rest.
        argv=[_binary("nginx"), "-c", str(config), "-p", str(settings.run_dir),
              "-e", "/dev/null"],
        prepare=lambda: render_nginx(settings),
        health=lambda: _ok(f"{settings.local_url}/healthz"),
        ports=[(settings.host, settings.port, "NEURONOVA_PORT")],
    )


def _dask_json(settings: Settings, path: str) -> dict:
    url = f"http://127.0.0.1:{settings.dask_dashboard_port}{DASHBOARD_PREFIX}/json/{path}"
    answer = requests.get(url, timeout=PROBE_TIMEOUT)
    answer.raise_for_status()
    return dict(answer.json())


def dask_scheduler_service(settings: Settings) -> Service:
    """The platform's Dask scheduler (Dask's own ``dask scheduler``), loopback only.

    Its dashboard listens on loopback under ``/dask`` so that nginx serves it at
    ``/dask/`` (to admins and scientists); healthy when the dashboard answers.
    """
    return Service(
        name="dask-scheduler",
        argv=[sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
              "--port", str(settings.dask_port),
              "--dashboard-address", f"127.0.0.1:{settings.dask_dashboard_port}",
              "--dashboard-prefix", DASHBOARD_PREFIX, "--no-jupyter"],
        env={**settings_env(settings), **DASK_ENV},
        cwd=REPO_ROOT,
        health=lambda: "workers" in _dask_json(settings, "counts.json"),
        ports=[("127.0.0.1", settings.dask_port, "NEURONOVA_DASK_PORT"),
               ("127.0.0.1", settings.dask_dashboard_port, "NEURONOVA_DASK_DASHBOARD_PORT")],
    )


def dask_worker_service(settings: Settings) -> Service:
    """The platform's Dask workers (``dask worker``: one nanny, ``NEURONOVA_DASK_WORKERS``
    processes as Dask starts them, daemonic); healthy when all joined the scheduler."""
    local = settings.run_dir / "dask-worker"
    return Service(
        name="dask-worker",
        argv=[sys.executable, "-m", "dask", "worker", f"tcp://127.0.0.1:{settings.dask_port}",
              "--host", "127.0.0.1", "--nworkers", str(settings.dask_workers),
              "--nthreads", str(settings.dask_threads),
              "--memory-limit", settings.dask_memory_limit, "--no-dashboard",
              "--local-directory", str(local), "--name", "neuronova"],
        env={**settings_env(settings), **DASK_ENV},
        cwd=REPO_ROOT,
        prepare=lambda: local.mkdir(parents=True, exist_ok=True),
        health=lambda: _dask_json(settings, "counts.json").get("workers", 0)
        >= settings.dask_workers,
        start_timeout=120.0,
    )


def demo_openemr_client(settings: Settings) -> dict[str, str]:
    """The OAuth2 client registered with the recorded OpenEMR demo server (a private file)."""
    from ..security.secret_store import new_password, read_or_create_json

    return read_or_create_json(settings.secrets_dir / "openemr-demo-client.json",
                               lambda: {"client_id": "neuronova-demo",
                                        "client_secret": new_password()})


def with_demo_openemr(settings: Settings) -> Settings:
    """``settings`` pointing the patient chain at the recorded OpenEMR demo server, when no
    real OpenEMR is configured and the demo server is on (``NEURONOVA_OPENEMR_DEMO``)."""
    if settings.openemr_url or not settings.openemr_demo:
        return settings
    client = demo_openemr_client(settings)
    return settings.model_copy(update={
        "openemr_url": f"http://127.0.0.1:{settings.openemr_demo_port}",
        "openemr_client_id": client["client_id"],
        "openemr_client_secret": client["client_secret"]})


def openemr_demo_service(settings: Settings) -> Service:
    """A local server answering as OpenEMR's API from recorded data (neuronova_lib.demo)."""
    port = settings.openemr_demo_port
    demo_openemr_client(settings)
    return Service(
        name="openemr-demo",
        argv=[sys.executable, "-m", "neuronova_lib.demo.openemr_server", "--port", str(port),
              "--client-secret-file", str(settings.secrets_dir / "openemr-demo-client.json")],
        cwd=REPO_ROOT,
        health=lambda: requests.get(f"http://127.0.0.1:{port}/apis/default/api/patient",
                                    timeout=PROBE_TIMEOUT).status_code == 401,
        ports=[("127.0.0.1", port, "NEURONOVA_OPENEMR_DEMO_PORT")],
    )


#: configurable-http-proxy, installed from npm by `make node-deps` (hub/package.json).
HUB_PROXY_BIN = REPO_ROOT / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"
HUB_CONFIG = REPO_ROOT / "hub" / "jupyterhub_config.py"


def _need_hub_proxy() -> None:
    from .supervisor import StartError

    if not HUB_PROXY_BIN.exists():
        raise StartError(f"hub-proxy: {HUB_PROXY_BIN} is missing: run `make node-deps` (npm "
                         "installs configurable-http-proxy from hub/package.json), or set "
                         "NEURONOVA_HUB_ENABLED=false")


def hub_proxy_service(settings: Settings) -> Service:
    """configurable-http-proxy on loopback: nginx sends /hub/, /user/ and /services/ here;
    JupyterHub adds a route per server through its REST API (token in the data dir)."""
    from ..hub.secrets import proxy_token

    api = f"http://127.0.0.1:{settings.hub_proxy_api_port}/api/routes"
    token = proxy_token(settings.secrets_dir)
    return Service(
        name="hub-proxy",
        argv=[str(HUB_PROXY_BIN), "--ip", "127.0.0.1", "--port", str(settings.hub_port),
              "--api-ip", "127.0.0.1", "--api-port", str(settings.hub_proxy_api_port),
              "--default-target", f"http://127.0.0.1:{settings.hub_api_port}",
              "--error-target", f"http://127.0.0.1:{settings.hub_api_port}/hub/error",
              "--log-level", "warn"],
        env={"CONFIGPROXY_AUTH_TOKEN": token},
        cwd=REPO_ROOT,
        prepare=_need_hub_proxy,
        health=lambda: requests.get(api, headers={"Authorization": f"token {token}"},
                                    timeout=PROBE_TIMEOUT).status_code == 200,
        ports=[("127.0.0.1", settings.hub_port, "NEURONOVA_HUB_PORT"),
               ("127.0.0.1", settings.hub_proxy_api_port, "NEURONOVA_HUB_PROXY_API_PORT")],
    )


def _prepare_hub(settings: Settings) -> None:
    from ..hub.secrets import hub_client
    from ..security.secret_store import ensure_private_dir

    ensure_private_dir(settings.hub_dir)
    hub_client(settings.secrets_dir)


def jupyterhub_service(settings: Settings) -> Service:
    """JupyterHub (hub/jupyterhub_config.py), its API on loopback; it starts the
    kernel-token service and the users' servers itself."""
    from ..hub.secrets import proxy_token

    return Service(
        name="jupyterhub",
        argv=[sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG)],
        env={**settings_env(settings), "CONFIGPROXY_AUTH_TOKEN": proxy_token(settings.secrets_dir)},
        cwd=settings.hub_dir,
        prepare=lambda: _prepare_hub(settings),
        health=lambda: _ok(f"http://127.0.0.1:{settings.hub_api_port}/hub/health"),
        ports=[("127.0.0.1", settings.hub_api_port, "NEURONOVA_HUB_API_PORT"),
               ("127.0.0.1", settings.hub_service_port, "NEURONOVA_HUB_SERVICE_PORT")],
        start_timeout=90.0,
    )


def dashboards_service(settings: Settings) -> Service:
    """The clinician dashboards: one Voilà server on loopback under ``/dashboards``
    (neuronova_lib.dashboards.server); its kernels read through nginx as the signed-in
    user. Healthy when Voilà answers its own page."""
    port = settings.dashboards_port
    return Service(
        name="dashboards",
        argv=[sys.executable, "-m", "neuronova_lib.dashboards.server", str(port),
              settings.local_url, str(settings.run_dir / "dashboards"),
              urlsplit(settings.public_url).path.rstrip("/"), str(settings.dashboard_pool_size)],
        cwd=REPO_ROOT,
        health=lambda: _ok(f"http://127.0.0.1:{port}/dashboards/"),
        ports=[("127.0.0.1", port, "NEURONOVA_DASHBOARDS_PORT")],
        start_timeout=90.0,
    )


def platform_services(settings: Settings) -> list[Service]:
    """Start order: the store first, the gateways last (so users never see half a platform).

    Dask (scheduler, then workers) starts before the API, whose upload jobs use it;
    not at all when ``NEURONOVA_DASK_SCHEDULER`` names another cluster or
    ``NEURONOVA_DASK_ENABLED`` is off.
    """
    services = [orthanc_service(settings)]
    if own_scheduler(settings):
        services += [dask_scheduler_service(settings), dask_worker_service(settings)]
    if not settings.openemr_url and settings.openemr_demo:
        services.append(openemr_demo_service(settings))
    services += [proxy_service(settings), api_service(with_demo_openemr(settings))]
    if settings.dicom_enabled:
        services.append(dicom_service(settings))
    if settings.mlflow_enabled:
        services.append(mlflow_service(settings))
    if settings.hub_enabled:
        services += [hub_proxy_service(settings), jupyterhub_service(settings)]
    if settings.dashboards_enabled:
        services.append(dashboards_service(settings))
    return [*services, nginx_log_service(settings), nginx_service(settings)]
