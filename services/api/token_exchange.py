"""Token exchange (RFC 8693) for the hub's kernel-token service: a kernel's hub token in,
a short-lived platform access token out, with an ``act`` claim naming the hub server.

``POST /api/auth/token`` with ``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``
(the route is in :mod:`services.api.routes.auth`). Three things must hold, and every
refusal is audited:

1. the caller is the hub's client (HTTP Basic or ``client_id``/``client_secret`` in the
   form; the secret is ``secrets/hub-client.json``, written when the hub is set up);
2. the subject token is a JupyterHub server's API token, which the API checks with the hub
   itself (``GET /hub/api/user``), so a leaked client secret alone mints nothing;
3. the user it names is the one asked for (``requested_subject``), exists on the
   platform, is active and has a notebook role.

The token lives ``NEURONOVA_HUB_TOKEN_TTL`` seconds and has no refresh token: a kernel
asks the service again, so a disabled user's kernel stops within that time (the guard
refuses the disabled user's live tokens sooner, within ``NEURONOVA_REVOCATION_BOUND``).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import requests
from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from neuronova_lib.config import Settings
from neuronova_lib.db.users import get_user
from neuronova_lib.hub.protocol import (ACCESS_TOKEN_TYPE, GRANT_TYPE, HUB_TOKEN_TYPE,
                                        NOTEBOOK_ROLES)
from neuronova_lib.hub.secrets import client_matches
from neuronova_lib.security.tokens import TokenService

from .auditing import write_audit

__all__ = ["GRANT_TYPE", "ExchangeForm", "exchange"]

_SERVER_SCOPE = "access:servers!server="
HUB_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ExchangeForm:
    """The form fields of a token-exchange request (RFC 8693 section 2.1, and Keycloak's
    ``requested_subject``; ``kernel`` is the kernel id the kernel reported)."""

    subject_token: str | None
    subject_token_type: str | None
    requested_subject: str | None
    requested_token_type: str | None
    client_id: str | None
    client_secret: str | None
    kernel: str | None


class Refusal(Exception):
    def __init__(self, status: int, error: str, reason: str, detail: str,
                 username: str | None = None, server: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.reason, self.detail = status, error, reason, detail
        self.username, self.server = username, server


def _client(request: Request, form: ExchangeForm) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if header[:6].lower() == "basic ":
        try:
            client_id, _, secret = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return client_id, secret
    if form.client_id and form.client_secret:
        return form.client_id, form.client_secret
    return None


def hub_identity(settings: Settings, token: str) -> dict | None:
    """The hub's model of the user a hub API token belongs to, or ``None`` if it is no good."""
    try:
        answer = requests.get(f"{settings.hub_api_url}/user", timeout=HUB_TIMEOUT_S,
                              headers={"Authorization": f"token {token}"})
    except requests.RequestException as exc:
        raise Refusal(503, "temporarily_unavailable", "exchange_hub_unreachable",
                      f"JupyterHub did not answer ({type(exc).__name__}); try again") from None
    if answer.status_code in (401, 403):
        return None
    if answer.status_code != 200:
        raise Refusal(503, "temporarily_unavailable", "exchange_hub_error",
                      f"JupyterHub answered {answer.status_code}; try again")
    model = answer.json()
    return model if isinstance(model, dict) else None


def server_of(model: dict) -> str | None:
    """``user/name`` of the server a token belongs to (its ``access:servers!server=`` scope)."""
    servers = {s[len(_SERVER_SCOPE):] for s in model.get("scopes", [])
               if isinstance(s, str) and s.startswith(_SERVER_SCOPE)}
    return servers.pop() if len(servers) == 1 else None


def _check(request: Request, db: Session, settings: Settings, form: ExchangeForm
           ) -> tuple[str, str, str]:
    """``(username, role, server)`` the token is for, or a :class:`Refusal`."""
    client = _client(request, form)
    if client is None or not client_matches(settings.secrets_dir, *client):
        raise Refusal(401, "invalid_client", "exchange_bad_client",
                      "client authentication failed: the hub's token service authenticates "
                      "with its client id and secret (secrets/hub-client.json)",
                      username=form.requested_subject)
    if form.subject_token_type != HUB_TOKEN_TYPE or not form.subject_token:
        raise Refusal(400, "invalid_request", "exchange_bad_request",
                      f"send subject_token with subject_token_type={HUB_TOKEN_TYPE}",
                      username=form.requested_subject)
    if form.requested_token_type not in (None, "", ACCESS_TOKEN_TYPE):
        raise Refusal(400, "invalid_target", "exchange_bad_request",
                      f"only {ACCESS_TOKEN_TYPE} can be issued", username=form.requested_subject)
    model = hub_identity(settings, form.subject_token)
    if model is None or model.get("kind", "user") != "user" or not model.get("name"):
        raise Refusal(400, "invalid_grant", "exchange_bad_subject",
                      "the hub does not accept the subject token", username=form.requested_subject)
    username = str(model["name"])
    server = server_of(model)
    if server is None:
        raise Refusal(400, "invalid_grant", "exchange_not_a_server",
                      "the subject token is not a notebook server's token", username=username)
    if form.requested_subject and form.requested_subject != username:
        raise Refusal(400, "invalid_grant", "exchange_other_user",
                      f"the subject token is {username}'s; it cannot be exchanged for "
                      f"{form.requested_subject}", username=username, server=server)
    user = get_user(db, username)
    if user is None or not user.is_active:
        raise Refusal(400, "invalid_grant", "exchange_inactive",
                      f"account {username!r} is disabled or unknown on the platform; ask an "
                      "administrator", username=username, server=server)
    if str(user.role) not in NOTEBOOK_ROLES:
        raise Refusal(400, "invalid_grant", "exchange_role",
                      f"{username} ({user.role}) may not use notebooks", username=username,
                      server=server)
    return username, str(user.role), server


def exchange(request: Request, db: Session, tokens: TokenService, settings: Settings,
             form: ExchangeForm) -> JSONResponse:
    """Answer a token-exchange request (RFC 8693 section 2.2 response, or an error)."""
    try:
        username, role, server = _check(request, db, settings, form)
    except Refusal as refused:
        write_audit(db, request, decision="deny", status=refused.status, reason=refused.reason,
                    username=refused.username, detail=refused.detail, server=refused.server)
        db.commit()
        headers = {"WWW-Authenticate": "Basic"} if refused.status == 401 else None
        return JSONResponse({"error": refused.error, "error_description": refused.detail,
                             "detail": refused.detail}, status_code=refused.status,
                            headers=headers)
    act = {"sub": f"jupyterhub-server:{server}", "server": server}
    if form.kernel:
        act["kernel"] = form.kernel[:64]
    ttl = settings.hub_token_ttl
    token, claims = tokens.mint(username, role, "access", ttl, act=act)
    write_audit(db, request, decision="allow", status=200, reason="token_exchange",
                username=username, role=role, token_id=str(claims["jti"]), server=server,
                detail=f"for hub server {server}"
                       + (f", kernel {act['kernel']}" if "kernel" in act else ""))
    db.commit()
    return JSONResponse({"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE,
                         "token_type": "bearer", "expires_in": ttl, "role": role},
                        headers={"Cache-Control": "no-store"})
