"""A JupyterHub kernel's platform token: asked of the hub's token service, never stored.

JupyterHub gives every notebook server a ``JUPYTERHUB_API_TOKEN`` (in the kernel's
environment too). :class:`HubTokenSource` sends it to ``/services/neuronova-token/``
(``NEURONOVA_TOKEN_SERVICE_URL``), which trades it for a short-lived platform access token
(RFC 8693 token exchange; see :mod:`neuronova_lib.hub.token_service`).
:class:`~.auth.BearerAuth` calls the source again shortly before each token expires, so
a kernel open for days keeps working, and a user disabled on the platform stops within
one token lifetime.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import requests

ENV_HUB_TOKEN = "JUPYTERHUB_API_TOKEN"
#: A dashboard page's kernel (Voilà): the access token nginx had the API mint for the
#: signed-in user as the page opened (header ``X-NeuroNova-Token``, which Voilà's
#: ``http_header_envs`` puts in the kernel's environment; neuronova_lib.dashboards.server).
ENV_DASHBOARD_TOKEN = "HTTP_X_NEURONOVA_TOKEN"
ENV_TOKEN_SERVICE = "NEURONOVA_TOKEN_SERVICE_URL"
TOKEN_SERVICE_PATH = "/services/neuronova-token/"


def kernel_id() -> str | None:
    """This kernel's id, from its connection file (``kernel-<id>.json``), if in a kernel."""
    try:
        from ipykernel.connect import get_connection_file
    except ImportError:
        return None
    try:
        name = Path(get_connection_file()).name
    except Exception:  # noqa: BLE001 - not running in a kernel
        return None
    return name[len("kernel-"):-len(".json")] if name.startswith("kernel-") else None


def in_hub_kernel() -> bool:
    """Whether this process runs in a JupyterHub server (it has the server's hub token)."""
    return bool(os.environ.get(ENV_HUB_TOKEN))


class HubTokenSource:
    """Fetches a platform access token from the hub's token service (called by BearerAuth).

    Parameters
    ----------
    service_url : str
        ``NEURONOVA_TOKEN_SERVICE_URL`` (default ``<platform>/services/neuronova-token/``).
    hub_token : str
        The server's ``JUPYTERHUB_API_TOKEN``.
    session : requests.Session
        For the service calls (not the DICOMweb session, whose auth this feeds).
    """

    def __init__(self, service_url: str, hub_token: str, session: requests.Session,
                 timeout: float = 30.0) -> None:
        self.service_url = service_url
        self._hub_token = hub_token
        self._session = session
        self.timeout = timeout

    def __repr__(self) -> str:  # never the token
        return f"HubTokenSource({self.service_url!r})"

    @classmethod
    def from_environment(cls, base: str, session: requests.Session,
                         timeout: float = 30.0) -> HubTokenSource:
        url = os.environ.get(ENV_TOKEN_SERVICE) or base.rstrip("/") + TOKEN_SERVICE_PATH
        return cls(url, os.environ[ENV_HUB_TOKEN], session, timeout)

    def __call__(self) -> dict[str, Any]:
        from .auth import http_error

        data = {"kernel": kernel_id() or ""}
        response = self._session.post(self.service_url, data=data, timeout=self.timeout,
                                      headers={"Authorization": f"token {self._hub_token}"})
        if response.status_code != 200:
            raise http_error(response, "the hub's token service refused a platform token")
        return dict(response.json())


#: Where a dashboard page's kernel renews its token (services/api/routes/auth_check.py).
DASHBOARD_RENEW_PATH = "/api/auth/dashboard-token"


class DashboardTokenSource:
    """Renews a dashboard page's token (called by BearerAuth before it expires): the
    current token is traded for a new one while the browser session behind it lives.

    Parameters
    ----------
    base : str
        The platform (``http://host:port``).
    token : str
        The token nginx passed to the page (``HTTP_X_NEURONOVA_TOKEN``); then the last one.
    session : requests.Session
        For the renewal calls (not the DICOMweb session, whose auth this feeds).
    """

    def __init__(self, base: str, token: str, session: requests.Session,
                 timeout: float = 30.0) -> None:
        self.url = base.rstrip("/") + DASHBOARD_RENEW_PATH
        self._token = token
        self._session = session
        self.timeout = timeout

    def __repr__(self) -> str:  # never the token
        return f"DashboardTokenSource({self.url!r})"

    def __call__(self) -> dict[str, Any]:
        from .auth import http_error

        response = self._session.post(self.url, timeout=self.timeout,
                                      headers={"Authorization": f"Bearer {self._token}"})
        if response.status_code != 200:
            raise http_error(response, "the page's session has ended")
        body = dict(response.json())
        self._token = str(body["access_token"])
        return body
