"""The hub's secrets, generated on first run into the data dir (mode 0600), never in code.

* ``hub-client.json`` — the client id and secret the kernel-token service authenticates
  with at the API's token exchange (the API reads the same file to check them).
* ``hub-proxy.json`` — ``CONFIGPROXY_AUTH_TOKEN``, shared by JupyterHub and
  configurable-http-proxy (stable, so a restarted hub finds the running proxy's routes).

JupyterHub keeps its cookie secret in ``secrets/jupyterhub_cookie_secret`` (it writes
that file itself, 0600) and its database in ``hub/jupyterhub.sqlite``.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from ..security.secret_store import new_password, read_or_create_json

#: The one client of the token exchange: the hub's kernel-token service.
HUB_CLIENT_ID = "neuronova-hub"


def hub_client(secrets_dir: Path) -> dict[str, str]:
    """``{"client_id", "client_secret"}`` of the hub's token service (created once)."""
    return read_or_create_json(secrets_dir / "hub-client.json",
                               lambda: {"client_id": HUB_CLIENT_ID,
                                        "client_secret": new_password(32)})


def client_matches(secrets_dir: Path, client_id: str, client_secret: str) -> bool:
    """Whether these are the hub's client credentials (constant-time comparison).

    False, not an error, when no hub has ever been set up in this data dir.
    """
    path = secrets_dir / "hub-client.json"
    if not path.exists():
        return False
    known = hub_client(secrets_dir)
    same_id = hmac.compare_digest(client_id.encode(), known["client_id"].encode())
    same_secret = hmac.compare_digest(client_secret.encode(), known["client_secret"].encode())
    return same_id and same_secret


def proxy_token(secrets_dir: Path) -> str:
    """``CONFIGPROXY_AUTH_TOKEN`` of the hub's proxy (created once)."""
    return str(read_or_create_json(secrets_dir / "hub-proxy.json",
                                   lambda: {"token": new_password(32)})["token"])
