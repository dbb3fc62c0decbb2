"""The hub's Authenticator: platform users, no second password prompt, no second user list.

A browser reaches ``/hub/login`` with the platform's session cookie (set by the sign-in at
``/login``). The login handler asks the platform API about that cookie
(``GET /api/auth/check``, the same check nginx's ``auth_request`` makes), on loopback, so
the identity comes from the API's session table and never from a header a client could
set. Programs may post a username and password to ``/hub/login?form=password`` (checked
by ``POST /api/auth/token``: the platform's throttling and audit apply).

Roles carry over: an admin is a hub admin, and each user is in one hub group named after
their role (``manage_groups``). Only :data:`NOTEBOOK_ROLES` get a hub account; a
clinician is sent to the dashboards; a disabled user is refused by the API either way.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from jupyterhub.auth import Authenticator
from jupyterhub.handlers.login import LoginHandler
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import List, Unicode

from ..db.browser_sessions import COOKIE_NAME
from .protocol import NOTEBOOK_ROLES


class PlatformLoginHandler(LoginHandler):
    """``/hub/login``: the platform session signs the user in; else off to the sign-in page."""

    authenticator: PlatformAuthenticator

    async def get(self) -> None:
        if self.current_user:
            await super().get()  # refreshes the hub cookie and goes on to next
            return
        if self.get_argument("form", "") == "password":
            await super().get()  # the hub's own form, for programs
            return
        cookie = self.get_cookie(COOKIE_NAME)
        identity = await self.authenticator.session_identity(cookie) if cookie else None
        if identity is None:  # not signed in to the platform (or the session is dead)
            here = url_path_join(self.hub.base_url, "login")
            next_url = self.get_argument("next", "")
            back = f"{here}?{urlencode({'next': next_url})}" if next_url else here
            self.redirect(f"{self.authenticator.signin_url}?next={quote(back, safe='')}")
            return
        if identity["role"] not in self.authenticator.notebook_roles:
            self.redirect(self.authenticator.elsewhere_url)
            return
        user = await self.login_user({"session": cookie})
        if user is None:  # the session ended between the two checks
            raise web.HTTPError(403, "the platform session ended: sign in again")
        self.redirect(self.get_next_url(user))


class PlatformAuthenticator(Authenticator):
    """Platform users and roles, checked by the platform API (see the module docstring)."""

    api_url = Unicode(
        "http://127.0.0.1:8101",
        help="The platform API on loopback (NEURONOVA_API_PORT).",
    ).tag(config=True)
    signin_url = Unicode(
        "/login", help="The platform's browser sign-in page (takes ?next=)."
    ).tag(config=True)
    elsewhere_url = Unicode(
        "/dashboards/", help="Where a signed-in user without a notebook role is sent."
    ).tag(config=True)
    notebook_roles = List(
        Unicode(), default_value=list(NOTEBOOK_ROLES),
        help="Platform roles that may sign in to the hub and have a server.",
    ).tag(config=True)

    def get_handlers(self, app: Any) -> list[tuple[str, type]]:
        return [("/login", PlatformLoginHandler)]

    async def _fetch(self, request: HTTPRequest) -> Any:
        try:
            return await AsyncHTTPClient().fetch(request)
        except HTTPClientError as exc:
            if exc.code in (401, 403):
                return None
            raise

    async def session_identity(self, cookie: str) -> dict[str, str] | None:
        """``{"name", "role"}`` of a live platform browser session, or ``None``."""
        answer = await self._fetch(HTTPRequest(
            f"{self.api_url}/api/auth/check",
            headers={"Cookie": f"{COOKIE_NAME}={cookie}", "X-Original-Method": "GET",
                     "X-Original-URI": "/hub/login"},
            request_timeout=10))
        if answer is None or answer.code != 204:
            return None
        return {"name": answer.headers["X-NeuroNova-User"],
                "role": answer.headers["X-NeuroNova-Role"]}

    async def password_identity(self, username: str, password: str) -> dict[str, str] | None:
        """``{"name", "role"}`` if the platform accepts this password, else ``None``."""
        import json

        body = urlencode({"username": username, "password": password})
        answer = await self._fetch(HTTPRequest(
            f"{self.api_url}/api/auth/token", method="POST", body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"}, request_timeout=30))
        if answer is None:
            return None
        return {"name": username, "role": str(json.loads(answer.body)["role"])}

    def user_model(self, identity: dict[str, str]) -> dict[str, Any] | None:
        """The hub's view of a platform user: admin flag and one group per role."""
        if identity["role"] not in self.notebook_roles:
            self.log.warning("%s (%s) may not use notebooks", identity["name"], identity["role"])
            return None
        return {"name": identity["name"], "admin": identity["role"] == "admin",
                "groups": [identity["role"]]}

    async def refresh_user(self, user: Any, handler: Any = None) -> bool | dict[str, Any]:
        """Every ``auth_refresh_age`` seconds, and before each spawn: a browser's platform
        session must still be alive and the same user's, and its role is carried over
        again (a demoted admin stops being a hub admin). ``False`` sends the browser back
        to sign in. Requests with a hub token and no platform cookie (programs, servers)
        are left to the token's own lifetime."""
        cookie = handler.get_cookie(COOKIE_NAME) if handler is not None else None
        if not cookie:
            return True
        identity = await self.session_identity(cookie)
        if identity is None or identity["name"] != user.name:
            return False
        return self.user_model(identity) or False

    async def authenticate(self, handler: Any, data: dict[str, str]) -> dict[str, Any] | None:
        if data.get("session"):
            identity = await self.session_identity(data["session"])
        elif data.get("username") and data.get("password"):
            identity = await self.password_identity(data["username"], data["password"])
        else:
            identity = None
        return self.user_model(identity) if identity else None
