"""JupyterHub for data scientists: the platform's authenticator, the kernel-token service,
the hub's secrets and what a kernel needs to reach the platform.

* :mod:`.secrets` — the hub's client credentials and proxy token (files in the data dir).
* :mod:`.authenticator` — :class:`~.authenticator.PlatformAuthenticator`: the platform's
  browser session (no second password prompt) or its password, roles as hub groups.
* :mod:`.token_service` — ``/services/neuronova-token/``: a kernel's hub token traded for a
  short-lived platform access token (RFC 8693 token exchange at ``POST /api/auth/token``).
* the kernel side is :mod:`neuronova_lib.dicomweb.kernel_token` (no JupyterHub needed).
* :mod:`.spawn` — each server's environment, its token's scopes, who may spawn, examples.
* :mod:`.protocol` — names shared with the API's token exchange (no JupyterHub import).
* :mod:`.remote` — driving a user's server from a program (tests, benchmarks).

Imported by the hub and its service only (JupyterHub is not needed anywhere else).
"""
