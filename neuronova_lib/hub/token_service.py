"""``/services/neuronova-token/``: a kernel's hub token in, a short-lived platform token out.

A hub-managed service (JupyterHub starts it, see ``hub/jupyterhub_config.py``). A kernel
``POST``\\ s here with the ``JUPYTERHUB_API_TOKEN`` its server was given
(``Authorization: token …``). The service asks the hub whose token that is, then asks
the platform API for an access token by token exchange (RFC 8693), authenticated as the
hub's client (``secrets/hub-client.json``)::

    POST /api/auth/token
    grant_type=urn:ietf:params:oauth:grant-type:token-exchange
    subject_token=<the kernel's hub token>
    subject_token_type=urn:neuronova:params:oauth:token-type:jupyterhub
    requested_subject=<the user the hub named>
    kernel=<kernel id, when the kernel says>

The API verifies the subject token with the hub itself (it does not take the service's
word alone), refuses disabled users and other users, and answers a token whose ``act``
claim names the hub server. Nothing is cached here: every call is checked anew.

Run as ``python -m neuronova_lib.hub.token_service --api URL --client-file PATH``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any
from urllib.parse import urlencode, urlsplit

from jupyterhub.services.auth import HubAuth
from tornado import ioloop, web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .protocol import ACCESS_TOKEN_TYPE, GRANT_TYPE, HUB_TOKEN_TYPE

log = logging.getLogger("neuronova.token_service")



def caller_token(header: str) -> str | None:
    """The token of ``Authorization: token X`` (JupyterHub's spelling) or ``Bearer X``."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    return None


class TokenHandler(web.RequestHandler):
    """``POST``: exchange the caller's hub token for a platform access token."""

    def initialize(self, hub_auth: HubAuth, api_url: str, client: dict[str, str]) -> None:
        self.hub_auth = hub_auth
        self.api_url = api_url
        self.client = client

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json")

    def refuse(self, status: int, detail: str) -> None:
        self.set_status(status)
        self.finish(json.dumps({"detail": detail}))

    async def post(self) -> None:
        token = caller_token(self.request.headers.get("Authorization", ""))
        if token is None:
            self.refuse(401, "send the kernel's JUPYTERHUB_API_TOKEN as 'Authorization: token …'")
            return
        model = await self.hub_auth.user_for_token(token, use_cache=False, sync=False)
        if not model or model.get("kind", "user") != "user":
            self.refuse(403, "the hub does not know this token as a user's")
            return
        form = {"grant_type": GRANT_TYPE, "subject_token": token,
                "subject_token_type": HUB_TOKEN_TYPE,
                "requested_token_type": ACCESS_TOKEN_TYPE,
                "requested_subject": model["name"]}
        kernel = self.get_body_argument("kernel", "") or self.get_query_argument("kernel", "")
        if kernel:
            form["kernel"] = kernel[:64]
        request = HTTPRequest(
            f"{self.api_url}/api/auth/token", method="POST", body=urlencode(form),
            auth_username=self.client["client_id"], auth_password=self.client["client_secret"],
            headers={"Content-Type": "application/x-www-form-urlencoded"}, request_timeout=30)
        try:
            answer = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as exc:  # the API's refusal, passed on as it is (it audited it)
            body = exc.response.body if exc.response is not None else b"{}"
            self.set_status(exc.code)
            self.finish(body)
            return
        self.finish(answer.body)


def make_app(api_url: str, client: dict[str, str]) -> web.Application:
    """The service's tornado app under ``JUPYTERHUB_SERVICE_PREFIX``."""
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/neuronova-token/")
    hub_auth = HubAuth(cache_max_age=0)  # never a cached answer for something that mints
    args: dict[str, Any] = {"hub_auth": hub_auth, "api_url": api_url.rstrip("/"),
                            "client": client}
    return web.Application([(prefix.rstrip("/") + "/?", TokenHandler, args)])


def _end_with_the_hub() -> None:
    """Ask Linux to send SIGTERM when the hub that started us dies.

    The hub starts its managed services in sessions of their own, so a hub killed without
    its clean-up (``neuronova down`` after the supervisor was killed, an OOM kill) would
    leave this service holding its port.
    """
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("could not ask to end with the hub (prctl errno %d)", ctypes.get_errno())
    if os.getppid() == 1:  # the hub was already gone before the request took effect
        raise SystemExit("the hub that started this service is gone")


def main(argv: list[str] | None = None) -> None:
    _end_with_the_hub()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", required=True, help="the platform API on loopback")
    parser.add_argument("--client-file", required=True, help="secrets/hub-client.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    client = json.loads(open(args.client_file).read())
    url = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8113"))
    make_app(args.api, client).listen(url.port or 80, url.hostname or "127.0.0.1")
    log.info("token service on %s", url.geturl())
    try:
        ioloop.IOLoop.current().start()
    except KeyboardInterrupt:  # the hub stops its managed services with SIGINT
        log.info("token service stopped")


if __name__ == "__main__":
    main()
