"""Which MLflow server a run logs to, whether it answers, and what the run records about itself.

The tracking URI is, in order: the explicit argument (``--tracking-uri``),
``MLFLOW_TRACKING_URI``, then the platform's own MLflow behind nginx
(``<local nginx address>/mlflow``, where a bearer token in
``MLFLOW_TRACKING_TOKEN`` signs the client in, or in a hub kernel the request auth
provider ``MLFLOW_TRACKING_AUTH`` names). The server is asked once,
with a short timeout, before any data is prepared: MLflow's own client
retries a dead server for minutes before it gives up.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from typing import Any

from ..config import Settings

#: MLflow experiment used when none is given.
DEFAULT_EXPERIMENT = "brain-tumor-segmentation"
_PROBE_TIMEOUT = 5.0


class TrackingUnavailable(RuntimeError):
    """The MLflow server cannot be used; the message says how to start or reach one."""


def resolve_tracking_uri(explicit: str | None, settings: Settings) -> str:
    """The tracking URI a run uses (see the module docstring for the order)."""
    if explicit:
        return explicit.rstrip("/")
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env.rstrip("/")
    return f"{settings.local_url}/mlflow"


def check_reachable(uri: str) -> None:
    """Ask the server for one experiment; raise :class:`TrackingUnavailable` if it cannot answer.

    Non-HTTP URIs (``file:``, ``sqlite:``) are local stores and are not probed.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    headers = {}
    auth = None
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif os.environ.get("MLFLOW_TRACKING_AUTH"):
        # The request auth provider MLflow's own client will use (a hub kernel's renewing
        # platform token: neuronova_lib.mlflow_auth), so the probe is signed in like the run.
        from mlflow.tracking.request_auth.registry import fetch_auth

        auth = fetch_auth(os.environ["MLFLOW_TRACKING_AUTH"])
    probe = f"{uri}/api/2.0/mlflow/experiments/search"
    try:
        response = requests.get(probe, params={"max_results": 1}, headers=headers, auth=auth,
                                timeout=_PROBE_TIMEOUT)
    except requests.RequestException as exc:
        raise TrackingUnavailable(
            f"MLflow is not reachable at {uri} ({type(exc).__name__}). Start the platform "
            "with `neuronova up` (it serves MLflow at /mlflow/), or point --tracking-uri or "
            "MLFLOW_TRACKING_URI at a running server, e.g. `mlflow server --host 127.0.0.1 "
            "--port 5000` and --tracking-uri http://127.0.0.1:5000"
        ) from exc
    if response.status_code in (401, 403):
        raise TrackingUnavailable(
            f"MLflow at {uri} refused the request ({response.status_code}): set "
            "MLFLOW_TRACKING_TOKEN to a platform access token of a scientist or model owner "
            "(POST /api/auth/token)"
        )
    if response.status_code != 200:
        raise TrackingUnavailable(
            f"{uri} does not answer as an MLflow server ({probe} gave HTTP "
            f"{response.status_code}); check --tracking-uri / MLFLOW_TRACKING_URI"
        )


def environment(device: Any) -> dict[str, str]:
    """Versions and hardware the run used (logged as tags and as an artifact)."""
    import mlflow
    import monai
    import numpy
    import torch

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "mlflow": mlflow.__version__,
        "numpy": numpy.__version__,
        "device": str(device),
        "torch_threads": str(torch.get_num_threads()),
        "executable": sys.executable,
    }
    if getattr(device, "type", "") == "cuda":
        info["cuda"] = str(torch.version.cuda)
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def provenance_digest(provenance: dict[str, Any]) -> str:
    """SHA-256 of the provenance document's canonical JSON: one tag says which data trained."""
    canonical = json.dumps(provenance, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
