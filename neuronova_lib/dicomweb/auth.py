"""Authentication for the platform's DICOMweb: a bearer token that renews itself, or a signed URL.

Both are :class:`requests.auth.AuthBase` objects set as ``session.auth``, so
every request of the session — dicomweb-client's and the library's own —
carries them (the way dicomweb-client expects authentication to be injected).

* :class:`BearerAuth` sets ``Authorization: Bearer …`` and, shortly before the
  token's ``exp``, trades the refresh token for a new pair
  (``POST /api/auth/refresh``), or signs in again with the password when it
  has one; with neither it raises :class:`TokenExpiredError` that says where
  to get a new token. A 401 answer triggers one renewal and one retry.
  In a JupyterHub kernel it asks the hub's token service instead (a ``source``:
  :class:`~neuronova_lib.dicomweb.kernel_token.HubTokenSource`), which needs no secret.
* :class:`SignedUrlAuth` appends ``token=…`` to every URL and never sends an
  ``Authorization`` header (the guard refuses requests that carry both).

Both send ``X-NeuroNova-Run`` with the active MLflow run's id, so that the audit log
says which run read which images.

The JWT payload is read without checking the signature — only to learn
``exp``; the server checks everything.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
from requests.auth import AuthBase

logger = logging.getLogger(__name__)

#: Renew this many seconds before ``exp`` (at most half the token's lifetime).
DEFAULT_REFRESH_MARGIN_S = 60.0


#: The header the guard and the API record as the reader's MLflow run.
RUN_HEADER = "X-NeuroNova-Run"


def active_run_id() -> str | None:
    """The MLflow run active in this process (``mlflow.active_run()``, only if MLflow is
    already imported: never imported here), else ``MLFLOW_RUN_ID``."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        try:
            run = mlflow.active_run()
        except Exception:  # noqa: BLE001 - a tracking problem must not stop a read
            run = None
        if run is not None:
            return str(run.info.run_id)
    return os.environ.get("MLFLOW_RUN_ID") or None


def add_run_header(request: requests.PreparedRequest) -> None:
    run = active_run_id()
    if run:
        request.headers[RUN_HEADER] = run
    else:
        request.headers.pop(RUN_HEADER, None)


class TokenExpiredError(requests.RequestException):
    """The token has expired (or is about to) and this client cannot get a new one."""


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, **not verified** (read ``exp``, ``iat``, ``studies`` for scheduling).

    Returns an empty dict for a token that is not a JWT.
    """
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (IndexError, ValueError, UnicodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "an unknown time"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def http_error(response: requests.Response, what: str = "") -> requests.HTTPError:
    """A :class:`requests.HTTPError` naming the status, the server's reason and the URL.

    A ``token=`` query parameter is redacted from the URL, so a signed URL
    never lands in a traceback or a log.
    """
    detail: Any
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text[:300]
    url = redact(response.url or "")
    prefix = f"{what}: " if what else ""
    return requests.HTTPError(
        f"{prefix}HTTP {response.status_code} {response.reason or ''} for {url}: {detail}".strip(),
        response=response,
        request=response.request,
    )


def redact(url: str) -> str:
    """``url`` with the value of any ``token`` query parameter replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.query or "token=" not in parts.query:
        return url
    query = "&".join(
        f"{k}=***" if k == "token" else f"{k}={v}" for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return parts._replace(query=query).geturl()


class BearerAuth(AuthBase):
    """``Authorization: Bearer`` with a token that renews itself before it expires.

    Parameters
    ----------
    base_url : str
        The platform (``http://host:port``), for ``/api/auth/...``.
    token : str, optional
        Current access token. Without one, the first request signs in.
    refresh_token : str, optional
        Traded for a new pair at ``POST /api/auth/refresh`` (refresh tokens rotate).
    username, password : str, optional
        Sign in again (``POST /api/auth/token``) when there is no usable refresh token.
    margin : float
        Renew this many seconds before ``exp`` (capped at half the token's lifetime,
        so a short-lived token is not renewed on every request).
    session : requests.Session, optional
        Used for the auth calls only (not this auth's own session, to avoid recursion).
    clock : callable
        Returns the current time (tests move it forward).
    timeout : float
        Seconds for each auth call.
    source : callable, optional
        Returns a fresh token response (``{"access_token": ...}``) when called: the hub's
        token service in a kernel. Preferred over refresh and password.

    Attributes
    ----------
    refreshes, logins, fetches : int
        How many renewals went through each route.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        refresh_token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        margin: float = DEFAULT_REFRESH_MARGIN_S,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
        hint: str | None = None,
        source: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.margin = float(margin)
        self.clock = clock
        self.timeout = timeout
        self.refreshes = 0
        self.logins = 0
        self.fetches = 0
        self._source = source
        self._username = username
        self._password = password
        self._refresh_token = refresh_token
        self._session = session or requests.Session()
        self._lock = threading.RLock()
        self._hint = hint or (
            f"{self.base_url}/hub/ (in a hub kernel, neuronova_lib.connect() with no arguments "
            "renews its own token), or call neuronova_lib.connect(url, username=..., "
            "password=...)"
        )
        self._token: str | None = None
        self._exp: float | None = None
        self._iat: float | None = None
        if token:
            self._set_access(token)

    def __repr__(self) -> str:  # never the token itself
        return f"BearerAuth({self.base_url!r}, expires={_when(self._exp)!r})"

    # -- state ------------------------------------------------------------
    def _set_access(self, token: str) -> None:
        claims = jwt_claims(token)
        self._token = token
        self._exp = float(claims["exp"]) if isinstance(claims.get("exp"), (int, float)) else None
        self._iat = float(claims["iat"]) if isinstance(claims.get("iat"), (int, float)) else None

    @property
    def expires_at(self) -> float | None:
        """``exp`` of the current access token (epoch seconds), if known."""
        return self._exp

    @property
    def can_renew(self) -> bool:
        return bool(self._refresh_token) or self._password is not None or self._source is not None

    def needs_renewal(self) -> bool:
        if self._token is None:
            return True
        if self._exp is None:
            return False  # not a JWT: only a 401 tells
        margin = self.margin
        if self._iat is not None and self._exp > self._iat:
            margin = min(margin, (self._exp - self._iat) / 2.0)
        return self.clock() >= self._exp - margin

    # -- renewal ----------------------------------------------------------
    def _post(self, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        response = self._session.post(f"{self.base_url}{path}", timeout=self.timeout, **kwargs)
        if response.status_code != 200:
            raise http_error(response, what)
        return dict(response.json())

    def _apply(self, body: dict[str, Any]) -> None:
        self._set_access(str(body["access_token"]))
        if body.get("refresh_token"):
            self._refresh_token = str(body["refresh_token"])

    def login(self) -> None:
        """Sign in with the username and password (raises :class:`requests.HTTPError` on 401)."""
        if self._username is None or self._password is None:
            raise TokenExpiredError("no password to sign in with")
        with self._lock:
            self._apply(self._post("/api/auth/token", "sign-in refused",
                                   data={"username": self._username, "password": self._password}))
            self.logins += 1
            logger.info("signed in to %s as %s", self.base_url, self._username)

    def renew(self) -> None:
        """Get a new access token now: the source (hub kernel), the refresh token, then the
        password, else raise."""
        with self._lock:
            if self._source is not None:
                self._apply(self._source())  # its refusal (a disabled user) is raised as it is
                self.fetches += 1
                logger.info("got a fresh access token for %s from the hub", self.base_url)
                return
            if self._refresh_token:
                try:
                    self._apply(self._post("/api/auth/refresh", "token refresh refused",
                                           json={"refresh_token": self._refresh_token}))
                    self.refreshes += 1
                    logger.info("refreshed the access token for %s", self.base_url)
                    return
                except requests.HTTPError as exc:
                    self._refresh_token = None  # used or refused: never send it again
                    if self._password is None:
                        raise TokenExpiredError(
                            f"token expired at {_when(self._exp)} and the refresh was refused "
                            f"({exc}): get a new one from {self._hint}"
                        ) from exc
                    logger.warning("token refresh refused (%s); signing in again", exc)
            if self._password is not None:
                self.login()
                return
            raise TokenExpiredError(
                f"token expired at {_when(self._exp)}: get a new one from {self._hint}"
            )

    def current(self) -> str | None:
        """The access token as it is, never renewed; ``None`` once it has expired. For reads
        a dashboard page makes in the background (a watcher): a renewal counts as the user's
        use of the browser session, which an open page alone must not keep alive."""
        with self._lock:
            if self._token is None or (self._exp is not None and self.clock() >= self._exp):
                return None
            return self._token

    def token(self) -> str:
        """The access token to send now, renewed first when it is about to expire."""
        with self._lock:
            if self.needs_renewal():
                if self._token is not None and not self.can_renew and self._exp is not None \
                        and self.clock() < self._exp:
                    return self._token  # inside the margin, still valid, nothing to renew with
                self.renew()
            assert self._token is not None
            return self._token

    # -- requests hooks -----------------------------------------------------
    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        add_run_header(request)
        request.register_hook("response", self._retry_on_401)
        return request

    def _retry_on_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        """One renewal and one retry when the server says the token is no good."""
        request = response.request
        if (response.status_code != 401 or not self.can_renew
                or getattr(request, "_neuronova_retried", False)):
            return response
        with self._lock:
            if request.headers.get("Authorization") == f"Bearer {self._token}":
                self.renew()  # nobody renewed since this request was sent
            token = self._token
        response.content  # noqa: B018 - drain, so the connection can be reused
        response.close()
        retry = request.copy()
        retry.headers["Authorization"] = f"Bearer {token}"
        retry._neuronova_retried = True  # type: ignore[attr-defined]
        assert response.connection is not None
        again = response.connection.send(retry, **kwargs)
        again.history.append(response)
        again.request = retry
        return again


class SignedUrlAuth(AuthBase):
    """Append a signed URL's ``token=…`` to every request; send no Authorization header.

    Parameters
    ----------
    token : str
        The study-scoped token (``/api/pacs/sign``'s ``token``).
    clock : callable
        Current time, for the expiry check.
    """

    def __init__(self, token: str, *, clock: Callable[[], float] = time.time) -> None:
        if not token:
            raise ValueError("a signed URL needs its token= value")
        self._token = token
        claims = jwt_claims(token)
        exp = claims.get("exp")
        self.expires_at: float | None = float(exp) if isinstance(exp, (int, float)) else None
        studies = claims.get("studies")
        self.studies: tuple[str, ...] | None = tuple(studies) if isinstance(studies, list) else None
        self.clock = clock

    def __repr__(self) -> str:
        return f"SignedUrlAuth(studies={self.studies!r}, expires={_when(self.expires_at)!r})"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.expires_at is not None and self.clock() >= self.expires_at:
            raise TokenExpiredError(
                f"the signed URL expired at {_when(self.expires_at)}: ask whoever shared it for "
                "a new one (Client.sign(study_uid) on a signed-in client mints one)"
            )
        request.headers.pop("Authorization", None)
        add_run_header(request)
        url = request.url or ""
        if not any(key == "token" for key, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)):
            request.prepare_url(url, {"token": self._token})
        return request
