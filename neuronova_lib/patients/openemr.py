"""OpenEMR's Standard REST API, as it documents itself, with OAuth2 client credentials.

Tokens come from ``POST {url}/oauth2/{site}/token`` (``grant_type=client_credentials``),
the client authenticating with its secret (``client_secret_post``) or, when a private key
is configured, with a signed JWT assertion (``private_key_jwt``, RS384, as OpenEMR's
SMART backend services expect). A token is reused until shortly before ``expires_in``;
a 401 (OpenEMR revoked or expired it early) gets one new token and one retry.

Patients are read from ``GET {url}/apis/{site}/api/patient?pubpid=<Patient ID>``; every
answer must be OpenEMR's envelope ``{"validationErrors": [...], "internalErrors": [...],
"data": ...}``. Anything else (an HTML error page, a login form, truncated JSON) is
garbage and raises :class:`~neuronova_lib.patients.errors.SourceUnavailable` with what
came back, so nothing of it reaches the cache.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt

from .errors import SourceUnavailable, send

#: Seconds before ``expires_in`` at which a token is renewed rather than used.
_EXPIRY_MARGIN = 30.0
_MAX_PAGES = 50


class OpenEmrClient:
    """One OpenEMR site.

    Parameters
    ----------
    url
        OpenEMR's address (scheme, host, port, path prefix if any).
    client_id
        The registered OAuth2 client.
    client_secret, private_key
        One of them: the secret, or the PEM private key for the JWT assertion.
    scope
        Scopes asked for (``api:oemr system/patient.read``).
    site
        The multisite name (``default``).
    timeout
        Seconds for connecting and for each read.
    """

    source = "openemr"

    def __init__(self, url: str, client_id: str, *, client_secret: str | None = None,
                 private_key: bytes | None = None, scope: str = "api:oemr system/patient.read",
                 site: str = "default", timeout: float = 5.0,
                 client: httpx.Client | None = None) -> None:
        if not client_secret and not private_key:
            raise ValueError("OpenEMR needs NEURONOVA_OPENEMR_CLIENT_SECRET or "
                             "NEURONOVA_OPENEMR_PRIVATE_KEY to get a token")
        self.url = url.rstrip("/")
        self.token_url = f"{self.url}/oauth2/{site}/token"
        self.api_url = f"{self.url}/apis/{site}/api"
        self.client_id, self.client_secret, self.private_key = client_id, client_secret, private_key
        self.scope = scope
        self.client = client or httpx.Client(timeout=timeout, headers={"Accept": "application/json"})
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> "OpenEmrClient | None":
        """The client ``NEURONOVA_OPENEMR_*`` describe, or ``None`` without a URL."""
        if not settings.openemr_url:
            return None
        if not settings.openemr_client_id:
            raise ValueError("NEURONOVA_OPENEMR_URL is set but NEURONOVA_OPENEMR_CLIENT_ID is "
                             "not: register a client in OpenEMR (Administration → API Clients)")
        key_path: Path | None = settings.openemr_private_key
        return cls(settings.openemr_url, settings.openemr_client_id,
                   client_secret=settings.openemr_client_secret,
                   private_key=key_path.read_bytes() if key_path else None,
                   scope=settings.openemr_scope, site=settings.openemr_site,
                   timeout=settings.openemr_timeout)

    def close(self) -> None:
        self.client.close()

    # -- OAuth2 ------------------------------------------------------------------
    def _client_auth(self) -> dict[str, str]:
        if self.private_key:
            now = int(time.time())
            assertion = jwt.encode(
                {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url,
                 "jti": str(uuid.uuid4()), "iat": now, "exp": now + 60},
                self.private_key, algorithm="RS384")
            return {"client_assertion_type":
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": assertion}
        assert self.client_secret is not None
        return {"client_id": self.client_id, "client_secret": self.client_secret}

    def token(self, renew: bool = False) -> str:
        """A valid access token (fetched when missing, near expiry or ``renew``)."""
        with self._lock:
            if not renew and self._token and time.time() < self._token_expires - _EXPIRY_MARGIN:
                return self._token
            form = {"grant_type": "client_credentials", "scope": self.scope,
                    **self._client_auth()}
            response = self._send("POST", self.token_url, data=form)
            body = self._body(response, "the token endpoint")
            if response.status_code != 200 or not isinstance(body.get("access_token"), str):
                raise SourceUnavailable(
                    "openemr", "refused",
                    f"the token endpoint answered {response.status_code}: "
                    f"{body.get('error')}: {body.get('error_description') or body}; check "
                    "NEURONOVA_OPENEMR_CLIENT_ID and its secret or key")
            self._token = body["access_token"]
            try:
                lifetime = float(body.get("expires_in", 3600))
            except (TypeError, ValueError):
                lifetime = 3600.0
            self._token_expires = time.time() + lifetime
            return self._token

    # -- transport -------------------------------------------------------------------
    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return send(self.client, "openemr", method, url, **kwargs)

    def _body(self, response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise SourceUnavailable(
                "openemr", "garbage",
                f"{what} answered {response.status_code} "
                f"({response.headers.get('content-type')}) that is not JSON: "
                f"{' '.join(response.text.split())[:160]!r}") from None
        if not isinstance(body, dict):
            raise SourceUnavailable("openemr", "garbage",
                                    f"{what} answered JSON that is not an object: "
                                    f"{str(body)[:160]!r}")
        return body

    def _get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        url = path if path.startswith("http") else f"{self.api_url}/{path}"
        response = None
        for attempt in range(2):
            headers = {"Authorization": f"Bearer {self.token(renew=attempt > 0)}"}
            response = self._send("GET", url, params=params, headers=headers)
            if response.status_code != 401:
                break
        assert response is not None
        what = f"GET {url}"
        if response.status_code == 401:
            raise SourceUnavailable("openemr", "refused",
                                    f"{what} refused a fresh token (401): "
                                    f"{response.text[:160]}; check the client's scopes")
        body = self._body(response, what)
        if response.status_code >= 500 or body.get("internalErrors"):
            raise SourceUnavailable("openemr", "error", f"{what} answered "
                                    f"{response.status_code}: {body.get('internalErrors')}")
        if not {"validationErrors", "data"} <= set(body):
            raise SourceUnavailable("openemr", "garbage",
                                    f"{what}: not OpenEMR's envelope (validationErrors, "
                                    f"internalErrors, data): {str(body)[:160]!r}")
        if body["validationErrors"]:
            raise SourceUnavailable("openemr", "error",
                                    f"{what} refused the request: {body['validationErrors']}")
        return response.status_code, body

    # -- patients ------------------------------------------------------------------
    def find_patient(self, pubpid: str) -> dict[str, Any] | None:
        """The record whose ``pubpid`` is exactly ``pubpid``, or ``None``."""
        _, body = self._get("patient", {"pubpid": pubpid})
        records = self._records(body, f"patient?pubpid={pubpid}")
        exact = [r for r in records if str(r.get("pubpid", "")) == pubpid]
        return exact[0] if exact else None

    def search_patients(self, params: dict[str, str], page_size: int = 50
                        ) -> list[dict[str, Any]]:
        """Every record matching OpenEMR search ``params`` (``lname``, ``fname``, ``DOB``,
        ...), following ``_limit``/``_offset`` pages."""
        records: list[dict[str, Any]] = []
        offset = 0
        for _ in range(_MAX_PAGES):
            _, body = self._get("patient", {**params, "_limit": str(page_size),
                                            "_offset": str(offset)})
            page = self._records(body, f"patient?{params}")
            records += page
            links = body.get("links") if isinstance(body.get("links"), dict) else {}
            if len(page) < page_size or not links.get("next"):
                break
            offset += page_size
        return records

    @staticmethod
    def _records(body: dict[str, Any], what: str) -> list[dict[str, Any]]:
        data = body["data"]
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list) or not all(isinstance(r, dict) and "pid" in r
                                                 for r in data):
            raise SourceUnavailable("openemr", "garbage",
                                    f"{what}: data is not a list of patient records: "
                                    f"{str(data)[:160]!r}")
        return data
