"""JupyterHub for NeuroNova's data scientists (traitlets; no secrets in this file).

`neuronova up` runs it (``python -m jupyterhub -f hub/jupyterhub_config.py``) with the
platform's settings in ``NEURONOVA_*`` variables. Secrets stay in the data dir:

* database: ``<home>/hub/jupyterhub.sqlite``;
* cookie secret: ``<home>/secrets/jupyterhub_cookie_secret`` (JupyterHub writes it, 0600);
* proxy token: ``CONFIGPROXY_AUTH_TOKEN``, from ``<home>/secrets/hub-proxy.json``, set by
  the supervisor for the hub and for configurable-http-proxy, which runs as a service of
  its own (``hub-proxy``) so that it outlives a hub restart;
* the token service's client secret: ``<home>/secrets/hub-client.json``.

nginx sends ``/hub/``, ``/user/`` and ``/services/`` to the proxy. Sign-in is the
platform's (:mod:`neuronova_lib.hub.authenticator`); every kernel gets a short-lived
platform token from the ``neuronova-token`` service (:mod:`neuronova_lib.hub.token_service`).
"""

import os
import sys

from neuronova_lib.config import Settings
from neuronova_lib.hub.spawn import (SERVER_TOKEN_SCOPES, TOKEN_SERVICE, kernel_environment,
                                     prepare_server)

c = get_config()  # noqa: F821 - JupyterHub's config loader provides it
settings = Settings()

# --- where the hub listens, and its state -------------------------------------------
c.JupyterHub.bind_url = f"http://127.0.0.1:{settings.hub_port}/"  # the proxy's listener
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{settings.hub_api_port}"
c.JupyterHub.db_url = f"sqlite:///{settings.hub_dir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(settings.secrets_dir / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(settings.hub_dir / "jupyterhub.pid")
# The proxy is a service of the supervisor (hub-proxy), started before the hub.
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings.hub_proxy_api_port}"
# Stopping the hub stops the users' servers (the supervisor stops the hub with SIGTERM).
c.JupyterHub.cleanup_servers = True
c.JupyterHub.trusted_alt_names = [settings.host]

# --- sign-in: the platform's users and roles --------------------------------------------
c.JupyterHub.authenticator_class = "neuronova_lib.hub.authenticator.PlatformAuthenticator"
c.PlatformAuthenticator.api_url = f"http://127.0.0.1:{settings.api_port}"
c.Authenticator.allow_all = True  # the authenticator admits notebook roles only
c.Authenticator.manage_groups = True  # one group per platform role
c.Authenticator.auto_login = False  # PlatformLoginHandler decides (session or password form)
# A browser's platform session and role are checked again this often, and before a spawn.
c.Authenticator.auth_refresh_age = 60
c.Authenticator.refresh_pre_spawn = True

# --- servers: the demo spawner runs every user as this system user, homes apart ---------
c.JupyterHub.spawner_class = settings.hub_spawner
c.SimpleLocalProcessSpawner.home_dir_template = str(settings.hub_dir / "users" / "{username}")
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.default_url = "/lab"
if os.geteuid() == 0:  # a container or CI machine running everything as root
    c.Spawner.args = ["--allow-root"]
if settings.hub_spawner.endswith("ProfileDockerSpawner"):  # profiles chosen at spawn time
    from pathlib import Path

    from neuronova_lib.hub.docker_spawner import load_profiles

    c.ProfileDockerSpawner.profiles = load_profiles(Path(__file__).parent / "docker-profiles.yaml")
    c.DockerSpawner.hub_connect_url = f"http://{settings.host}:{settings.hub_api_port}"
c.Spawner.environment = kernel_environment(settings)
c.Spawner.server_token_scopes = SERVER_TOKEN_SCOPES
c.Spawner.pre_spawn_hook = prepare_server  # notebook roles only; examples in ~/examples
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 60

# --- the kernel-token service ---------------------------------------------------------
c.JupyterHub.services = [{
    "name": TOKEN_SERVICE,
    "url": f"http://127.0.0.1:{settings.hub_service_port}",
    "command": [sys.executable, "-m", "neuronova_lib.hub.token_service",
                "--api", f"http://127.0.0.1:{settings.api_port}",
                "--client-file", str(settings.secrets_dir / "hub-client.json")],
    "display": False,
}]
# Every user may call it (a kernel's token gets the subset of SERVER_TOKEN_SCOPES its user holds).
c.JupyterHub.load_roles = [
    {"name": "user", "scopes": ["self", f"access:services!service={TOKEN_SERVICE}"]},
]
