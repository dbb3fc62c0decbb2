"""Render the nginx and Orthanc configs from the templates in ``nginx/`` and ``orthanc/``.

The rendered files hold the Orthanc service password, so they are written
into the data dir's ``run/`` folder with mode 0600, never into the checkout.
"""

from __future__ import annotations

import base64
import os
import sys
import sysconfig
from pathlib import Path

import jinja2

from ..compute import own_scheduler
from ..config import REPO_ROOT, Settings
from ..security.secret_store import ensure_private_dir, orthanc_service_account
from .nginx_log import check_socket_path
from .ohif import INSTALL_ROOT, installed_stamp, render_app_config, viewer_base

ORTHANC_PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
#: Orthanc's DICOMweb root ("Root" in orthanc.json.j2); users reach it at
#: ``Settings.public_dicomweb_url``, which must end with it.
ORTHANC_DICOMWEB_ROOT = "/dicom-web/"


def _environment(folder: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _write_private(path: Path, text: str) -> Path:
    ensure_private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
    return path


def orthanc_python_path() -> list[str]:
    """Where the plugin's embedded Python finds neuronova_lib and the venv's packages.

    orthanc-python embeds the system Python 3.11; the venv's compiled packages
    (numpy, imagecodecs) load there only if the venv is a 3.11 too.
    """
    if sys.version_info[:2] != (3, 11):
        raise RuntimeError(
            f"the Orthanc WADO plugin runs in Debian's Python 3.11, but this venv is "
            f"{sys.version_info.major}.{sys.version_info.minor}: recreate .venv with python3.11 "
            "or set NEURONOVA_ORTHANC_WADO_PLUGIN=false"
        )
    paths = [str(REPO_ROOT)]
    for key in ("purelib", "platlib"):
        path = sysconfig.get_paths()[key]
        if path not in paths:
            paths.append(path)
    return paths


def orthanc_plugins(settings: Settings) -> list[str]:
    names = ["libOrthancDicomWeb.so"]
    if settings.orthanc_wado_plugin:
        names.append("libOrthancPython.so")
    if settings.orthanc_postgres_uri:
        names.append("libOrthancPostgreSQLIndex.so")
    return [str(ORTHANC_PLUGIN_DIR / name) for name in names]


def orthanc_forwarded(settings: Settings) -> str:
    """The ``Forwarded`` header nginx sends Orthanc with every request (RFC 7239).

    Orthanc's DICOMweb plugin (1.7) writes absolute URLs into its answers (QIDO
    RetrieveURL, metadata BulkDataURI) as ``http[s]://`` + host + its own root, the host
    and scheme taken from this header's first ``host=`` and ``proto=``, verbatim. Version
    1.7 has no "PublicRoot" option, so the host carries the public path prefix too:
    ``host=pacs.example.org/neuronova/api/pacs;proto=https`` makes it write
    ``https://pacs.example.org/neuronova/api/pacs/dicom-web/…``, the public URL of the
    same resource, instead of ``http://127.0.0.1/dicom-web/…`` (Orthanc's own root under
    the Host nginx sends it), which no client can follow. A header, not
    a rewrite of the answers: frames and bulk data pass through untouched. Quoting the
    value would be RFC 7239's way but the plugin does not unquote, so
    ``Settings._public_url`` admits no character that needs it.
    """
    public = settings.public_dicomweb_url
    root = ORTHANC_DICOMWEB_ROOT.rstrip("/")
    if not public.endswith(root):
        raise RuntimeError(f"the public DICOMweb root {public} does not end with Orthanc's "
                           f"{root}: Orthanc's URLs would not match the platform's")
    scheme, _, rest = public.partition("://")
    return f"host={rest[:-len(root)]};proto={scheme}"


def render_orthanc(settings: Settings) -> Path:
    """Orthanc's config. Its DICOM listener is off whatever the settings say: C-STORE
    enters through the platform's own listener (:mod:`neuronova_lib.dimse`), which passes
    every instance through the ingest gate (Orthanc dies on some files it is sent)."""
    account = orthanc_service_account(settings.secrets_dir)
    settings.orthanc_storage.mkdir(parents=True, exist_ok=True)
    text = _environment(REPO_ROOT / "orthanc").get_template("orthanc.json.j2").render(
        storage=str(settings.orthanc_storage),
        http_port=settings.orthanc_port,
        registered_users={account["username"]: account["password"]},
        plugins=orthanc_plugins(settings),
        dicomweb_root=ORTHANC_DICOMWEB_ROOT,
        postgres=settings.orthanc_postgres_uri,
        wado_plugin=str(REPO_ROOT / "orthanc" / "plugins" / "neuronova_wado.py")
        if settings.orthanc_wado_plugin else None,
        python_path=orthanc_python_path() if settings.orthanc_wado_plugin else [],
        retrieve_max_instances=settings.retrieve_max_instances,
        retrieve_max_bytes=settings.retrieve_max_bytes,
        memory_debug=settings.orthanc_memory_debug,
        frames_dir=str(settings.frames_dir) if settings.frame_store else None,
    )
    return _write_private(settings.run_dir / "orthanc.json", text)


def _nginx_user() -> str | None:
    """``user NAME GROUP`` for nginx when started as root, else nothing (nginx ignores it)."""
    if os.geteuid() != 0:
        return None
    import grp
    import pwd

    return f"{pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name}"


def nginx_log_socket(settings: Settings) -> Path:
    """Where nginx sends its error log (see :mod:`neuronova_lib.stack.nginx_log`)."""
    return check_socket_path(settings.run_dir / "nginx-log.sock")


#: The viewer's Content-Security-Policy: only this site (WebAssembly codecs, workers from
#: blob: URLs and inline boot scripts are OHIF's own).
OHIF_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' "
            "'wasm-unsafe-eval' blob:; worker-src 'self' blob:; connect-src 'self' blob: data:; "
            "img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; font-src 'self' data:; "
            "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'")

#: The dashboards (Voilà and its widgets, NiiVue's WebGL): everything from this site only;
#: a request to another host is refused by the browser, not just left unused.
DASHBOARDS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' "
                  "'wasm-unsafe-eval' blob:; worker-src 'self' blob:; "
                  "connect-src 'self' blob: data:; img-src 'self' blob: data:; "
                  "style-src 'self' 'unsafe-inline'; font-src 'self' data:; object-src 'none'; "
                  "base-uri 'self'; form-action 'self'; frame-ancestors 'self'")


def ohif_viewer(settings: Settings, root: Path = INSTALL_ROOT
                ) -> tuple[str | None, str | None, str]:
    """nginx's root for the installed OHIF viewer, its rendered ``app-config.js``, and what
    ``/pacs-viewer/`` says instead when the viewer cannot be served (not installed, or
    re-based for another path than this platform's): the command that fixes it."""
    stamp = installed_stamp(root)
    base = viewer_base(settings)
    if stamp is None:
        return None, None, ("The OHIF viewer is not installed: run `make viewer`, then "
                            "restart the platform.")
    if stamp.get("base") != base:
        return None, None, (f"The OHIF viewer is re-based for {stamp.get('base')}, this "
                            f"platform serves it at {base}: run `python -m "
                            f"neuronova_lib.stack.ohif --base {base}`, then restart.")
    config = _write_private(settings.run_dir / "ohif-app-config.js", render_app_config(settings))
    return str(root), str(config), ""


def frame_store_types() -> tuple[list[tuple[str, str]], list[str]]:
    """nginx's ``types`` for the frame store (Content-Type by file extension) and the
    extensions ``try_files`` tries, most common first (HTJ2K, then the rest)."""
    from ..frames import store

    types = [(store.content_type(label), store.extension(label)) for label in store.LABELS]
    types.append((store.METADATA_TYPE, store.METADATA_NAME.rpartition(".")[2]))
    return types, [ext for _, ext in types]


def render_nginx(settings: Settings, path: Path | None = None) -> Path:
    """nginx's config for ``settings``, written to ``path`` (default ``run/nginx.conf``)."""
    account = orthanc_service_account(settings.secrets_dir)
    basic = base64.b64encode(f"{account['username']}:{account['password']}".encode()).decode()
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (settings.run_dir / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    ohif_root, ohif_config, ohif_missing = ohif_viewer(settings)
    text = _environment(REPO_ROOT / "nginx").get_template("nginx.conf.j2").render(
        workers=2,
        user=_nginx_user(),
        run_dir=str(settings.run_dir),
        log_dir=str(settings.log_dir),
        html_root=str(REPO_ROOT / "nginx" / "html"),
        host=settings.host,
        port=settings.port,
        api_port=settings.api_port,
        proxy_port=settings.proxy_port,
        orthanc_port=settings.orthanc_port,
        orthanc_basic=basic,
        orthanc_forwarded=orthanc_forwarded(settings),
        api_rate=settings.api_rate,
        api_burst=settings.api_burst,
        max_body_size=settings.max_body_size,
        log_socket=str(nginx_log_socket(settings)),
        token_concurrency=settings.token_concurrency,
        retry_after=settings.retry_after,
        mlflow_enabled=settings.mlflow_enabled,
        mlflow_port=settings.mlflow_port,
        # The dashboard of the Dask cluster `up` runs (none for an external scheduler).
        dask_dashboard_port=settings.dask_dashboard_port if own_scheduler(settings) else None,
        hub_port=settings.hub_port if settings.hub_enabled else None,
        ohif_root=ohif_root,
        ohif_config=ohif_config,
        ohif_missing=ohif_missing,
        ohif_csp=OHIF_CSP,
        dashboards_port=settings.dashboards_port if settings.dashboards_enabled else None,
        dashboards_csp=DASHBOARDS_CSP,
        frame_store=settings.frame_store and settings.orthanc_wado_plugin,
        frame_decision_cache=settings.frame_decision_cache,
        frames_dir=str(settings.frames_dir),
        frame_types=frame_store_types()[0],
        frame_exts=frame_store_types()[1],
    )
    return _write_private(path or settings.run_dir / "nginx.conf", text)
