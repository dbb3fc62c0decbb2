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

from ..config import REPO_ROOT, Settings
from ..security.secret_store import ensure_private_dir, orthanc_service_account

ORTHANC_PLUGIN_DIR = Path("/usr/share/orthanc/plugins")


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


def render_orthanc(settings: Settings) -> Path:
    account = orthanc_service_account(settings.secrets_dir)
    settings.orthanc_storage.mkdir(parents=True, exist_ok=True)
    text = _environment(REPO_ROOT / "orthanc").get_template("orthanc.json.j2").render(
        storage=str(settings.orthanc_storage),
        http_port=settings.orthanc_port,
        registered_users={account["username"]: account["password"]},
        dicom_enabled=settings.orthanc_dicom_enabled,
        dicom_port=settings.orthanc_dicom_port,
        modalities=settings.orthanc_modalities,
        plugins=orthanc_plugins(settings),
        postgres=settings.orthanc_postgres_uri,
        wado_plugin=str(REPO_ROOT / "orthanc" / "plugins" / "neuronova_wado.py")
        if settings.orthanc_wado_plugin else None,
        python_path=orthanc_python_path() if settings.orthanc_wado_plugin else [],
        memory_debug=settings.orthanc_memory_debug,
    )
    return _write_private(settings.run_dir / "orthanc.json", text)


def _nginx_user() -> str | None:
    """``user NAME GROUP`` for nginx when started as root, else nothing (nginx ignores it)."""
    if os.geteuid() != 0:
        return None
    import grp
    import pwd

    return f"{pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name}"


def render_nginx(settings: Settings) -> Path:
    account = orthanc_service_account(settings.secrets_dir)
    basic = base64.b64encode(f"{account['username']}:{account['password']}".encode()).decode()
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (settings.run_dir / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
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
        api_rate=settings.api_rate,
        api_burst=settings.api_burst,
        max_body_size=settings.max_body_size,
    )
    return _write_private(settings.run_dir / "nginx.conf", text)
