"""What the hub gives each notebook server: its environment, its token's scopes, who may spawn.

No secret is put in a kernel's environment: the kernel asks the token service
(:data:`TOKEN_SERVICE`) with the ``JUPYTERHUB_API_TOKEN`` JupyterHub gives every server,
and gets a short-lived platform token (:mod:`.token_service`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..compute import DASHBOARD_PREFIX, own_scheduler, scheduler_address
from ..config import REPO_ROOT, Settings
from .protocol import NOTEBOOK_ROLES, TOKEN_SERVICE

#: A server's own scopes (JupyterHub's ``server`` role) plus calling the token service.
#: The example notebooks each user finds in ``~/examples``.
EXAMPLES = REPO_ROOT / "notebooks"
SERVER_TOKEN_SCOPES = ["users:activity!user", "access:servers!server",
                       f"access:services!service={TOKEN_SERVICE}"]


def kernel_environment(settings: Settings) -> dict[str, str]:
    """``NEURONOVA_URL``, ``MLFLOW_TRACKING_URI``, the Dask scheduler: set in every server.

    With the platform's own Dask cluster, its dashboard too (``NEURONOVA_DASK_DASHBOARD_URL``,
    and Dask's link template, so ``Client.dashboard_link`` is the page behind nginx).

    URLs are the platform's public ones (nginx), which a kernel reaches like any client.
    """
    public = settings.public_url.rstrip("/")
    env = {
        "NEURONOVA_URL": public,
        "NEURONOVA_TOKEN_SERVICE_URL": f"{public}/services/{TOKEN_SERVICE}/",
        "MLFLOW_TRACKING_URI": f"{public}/mlflow",
        # MLflow's client asks neuronova_lib.mlflow_auth for the kernel's renewing token.
        "MLFLOW_TRACKING_AUTH": "neuronova",
    }
    scheduler = scheduler_address(settings)
    if scheduler:
        # Dask's own variable: distributed.Client() with no address connects here.
        env["DASK_SCHEDULER_ADDRESS"] = scheduler
    if own_scheduler(settings):  # nginx serves its dashboard at /dask/ (admins, scientists)
        dashboard = f"{public}{DASHBOARD_PREFIX}/status"
        env["NEURONOVA_DASK_DASHBOARD_URL"] = dashboard
        # Dask's dashboard link template: Client.dashboard_link and the client's notebook
        # display show the page as the browser reaches it, not the scheduler's loopback port.
        env["DASK_DISTRIBUTED__DASHBOARD__LINK"] = dashboard
    return env


def copy_examples(home: Path, examples: Path = EXAMPLES) -> Path:
    """Put the example notebooks in ``home/examples`` (once: a user's edits are kept, and a
    notebook added to the platform later is copied on the next start)."""
    target = home / "examples"
    target.mkdir(parents=True, exist_ok=True)
    for notebook in sorted(examples.glob("*.ipynb")):
        if not (target / notebook.name).exists():
            shutil.copy2(notebook, target / notebook.name)
    return target


def prepare_server(spawner: Any) -> None:
    """``pre_spawn_hook``: :func:`may_spawn`, then the examples into the user's home (for
    spawners with a local home, such as the demo's)."""
    may_spawn(spawner)
    home = getattr(spawner, "home_dir", None)
    if home:
        copy_examples(Path(home))
        quiet_lab(Path(home))


#: JupyterLab's notification settings, as a user's own file would hold them.
LAB_NOTIFICATION_SETTINGS = (Path(".jupyter") / "lab" / "user-settings" / "@jupyterlab"
                             / "apputils-extension" / "notification.jupyterlab-settings")


def quiet_lab(home: Path) -> Path:
    """JupyterLab asks every new user whether to fetch "Jupyter news" from jupyter.org and
    looks for new versions on PyPI: requests to other hosts that the platform's offline
    machines refuse, and a prompt that is not the user's work. Off, in the user's own
    settings file, written once (a user who turns them on keeps that)."""
    path = home / LAB_NOTIFICATION_SETTINGS
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}, indent=2))
    return path


def may_spawn(spawner: Any) -> None:
    """``pre_spawn_hook``: only users in a notebook role's group get a server.

    The authenticator already refuses the others; this also covers a hub admin starting a
    server for someone else, and users added to the hub by hand.
    """
    groups = {group.name for group in spawner.user.groups}
    if not groups & set(NOTEBOOK_ROLES):
        from tornado import web

        raise web.HTTPError(
            403, f"{spawner.user.name} may not have a notebook server: it needs the role "
                 f"{', '.join(NOTEBOOK_ROLES)} on the platform")
