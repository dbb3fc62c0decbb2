"""MLflow's client signed in to the platform: a request auth provider named ``neuronova``.

The platform's MLflow is behind nginx's sign-in (``/mlflow/``), so MLflow's client must
send a platform access token, and in a notebook that token is short-lived. MLflow asks a
request auth provider for every request when ``MLFLOW_TRACKING_AUTH`` names one; this
provider (registered as the ``mlflow.request_auth_provider`` entry point ``neuronova``)
answers with one :class:`~neuronova_lib.dicomweb.auth.BearerAuth` per process, which renews
itself: in a JupyterHub kernel from the hub's token service (the hub sets
``MLFLOW_TRACKING_AUTH=neuronova`` in every server), elsewhere from ``NEURONOVA_TOKEN``
(and ``NEURONOVA_REFRESH_TOKEN``).
"""

from __future__ import annotations

import os
import threading

from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

from .dicomweb.auth import BearerAuth
from .dicomweb.kernel_token import HubTokenSource, in_hub_kernel
from .dicomweb.session import ENV_REFRESH_TOKEN, ENV_TOKEN, ENV_URL, base_url, http_session

NAME = "neuronova"
_lock = threading.Lock()
_auth: BearerAuth | None = None


def platform_auth() -> BearerAuth:
    """This process's platform token for MLflow (created on first use, then renewed)."""
    global _auth
    with _lock:
        if _auth is None:
            url = os.environ.get(ENV_URL)
            if not url:
                raise RuntimeError(f"MLFLOW_TRACKING_AUTH={NAME} needs {ENV_URL} (the platform)")
            base = base_url(url)
            if in_hub_kernel():
                session = http_session(2)
                _auth = BearerAuth(base, session=session,
                                   source=HubTokenSource.from_environment(base, session))
            elif os.environ.get(ENV_TOKEN):
                _auth = BearerAuth(base, os.environ[ENV_TOKEN],
                                   refresh_token=os.environ.get(ENV_REFRESH_TOKEN) or None)
            else:
                raise RuntimeError(
                    f"MLFLOW_TRACKING_AUTH={NAME}: run in a JupyterHub kernel of the platform, "
                    f"or set {ENV_TOKEN} (POST /api/auth/token gives one)")
        return _auth


class PlatformAuthProvider(RequestAuthProvider):
    """``MLFLOW_TRACKING_AUTH=neuronova``: the platform's renewing bearer token."""

    def get_name(self) -> str:
        return NAME

    def get_auth(self) -> BearerAuth:
        return platform_auth()
