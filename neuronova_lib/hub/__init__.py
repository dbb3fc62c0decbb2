"""JupyterHub for data scientists: the platform's authenticator, the kernel-token service,
the hub's secrets and what a kernel needs to reach the platform.

* :mod:`.secrets` — the hub's client credentials and proxy token (files in the data dir).
* :mod:`.authenticator` — :class:`~.authenticator.PlatformAuthenticator`: the platform's
  browser session (no second password prompt) or its password, roles as hub groups.
* :mod:`.token_service` — ``/services/neuronova-token/``: a kernel's hub token traded for a
  short-lived platform access token (RFC 8693 token exchange at ``POST /api/auth/token``).
* :mod:`.kernel` — the kernel side: ask the service for a token, renew it before expiry.
* :mod:`.settings` — what the hub configuration reads from the platform's settings.

Imported by the hub and its service only (JupyterHub is not needed anywhere else).
"""
