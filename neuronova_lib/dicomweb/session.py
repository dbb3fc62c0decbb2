"""Session and sign-in: the platform URL, the HTTP session, and the two ways to connect.

:func:`connect` signs in (a token, a password, or the kernel's environment)
and :func:`connect_signed` uses a signed URL alone; both build the one
:class:`requests.Session` that carries the authentication (:mod:`.auth`) and
is shared by the library's own requests and dicomweb-client's, the way
dicomweb-client's ``session_utils`` builds one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .. import __version__
from .auth import DEFAULT_REFRESH_MARGIN_S, BearerAuth, SignedUrlAuth, jwt_claims, redact
from .kernel_token import ENV_DASHBOARD_TOKEN, DashboardTokenSource, HubTokenSource, in_hub_kernel

if TYPE_CHECKING:
    from .client import Client

#: Environment variables JupyterHub sets in every kernel.
ENV_URL = "NEURONOVA_URL"
ENV_TOKEN = "NEURONOVA_TOKEN"
#: Optional: a refresh token beside the access token, so a long-lived kernel can renew.
ENV_REFRESH_TOKEN = "NEURONOVA_REFRESH_TOKEN"

DICOMWEB_PATH = "/api/pacs/dicom-web"


def base_url(url: str) -> str:
    """``http://host:port`` from a platform URL, with or without the DICOMweb path."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"platform URL must start with http:// or https://, got {url!r}")
    if DICOMWEB_PATH in url:
        url = url[: url.index(DICOMWEB_PATH)]
    return url.split("?", 1)[0].rstrip("/")


def http_session(max_workers: int) -> requests.Session:
    """Keep-alive session with a pool as large as the frame workers and retries on 429/503."""
    session = requests.Session()
    retry = Retry(
        total=4, connect=3, read=0, status=3, backoff_factor=0.25,
        status_forcelist=(429, 502, 503, 504), allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True, raise_on_status=False,
    )
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(10, max_workers), max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = f"neuronova/{__version__} {requests.utils.default_user_agent()}"

    def redact_error_url(response: requests.Response, **_: Any) -> requests.Response:
        # raise_for_status() prints response.url: keep a signed token out of tracebacks.
        if response.status_code >= 400 and response.url:
            response.url = redact(response.url)
        return response

    session.hooks["response"].append(redact_error_url)
    return session


def connect(
    url: str | None = None,
    token: str | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    refresh_token: str | None = None,
    cache_dir: str | Path | None = None,
    max_workers: int = 8,
    refresh_margin: float = DEFAULT_REFRESH_MARGIN_S,
    timeout: float = 30.0,
) -> Client:
    """A DICOMweb client signed in to the platform.

    Credentials, first match wins: ``token`` (with ``refresh_token`` and/or
    ``password`` to renew it); ``username`` + ``password`` (signs in now);
    ``NEURONOVA_TOKEN`` (and, if set, ``NEURONOVA_REFRESH_TOKEN``) from the environment;
    in a dashboard page's kernel (Voilà), the signed-in user's token nginx passed
    (``HTTP_X_NEURONOVA_TOKEN``);
    in a JupyterHub kernel, the hub's token service, asked with the server's
    ``JUPYTERHUB_API_TOKEN`` and again before each token expires
    (:mod:`.kernel_token`): ``neuronova_lib.connect()`` with no arguments.

    Parameters
    ----------
    url : str, optional
        The platform (``http://host:port``); default ``NEURONOVA_URL``.
    token : str, optional
        An access token (JWT).
    username, password : str, optional
        Sign in with these, and again whenever the token cannot be refreshed.
    refresh_token : str, optional
        Renews the access token shortly before it expires.
    cache_dir : str or Path, optional
        On-disk frame cache (see :class:`~.cache.FrameCache`).
    max_workers : int
        Concurrent frame requests.
    refresh_margin : float
        Renew this many seconds before the token's ``exp``.
    timeout : float
        Seconds per request.

    Returns
    -------
    Client

    Raises
    ------
    ValueError
        No URL, or no credentials.
    requests.HTTPError
        The sign-in was refused (wrong password: 401).

    Examples
    --------
    >>> import neuronova_lib
    >>> client = neuronova_lib.connect()                       # doctest: +SKIP
    >>> study = client.find_studies(patient_id="NNDEMO-7-001")[0]  # doctest: +SKIP
    >>> volume = client.load_study(study)                      # doctest: +SKIP
    """
    url = url or os.environ.get(ENV_URL)
    if not url:
        raise ValueError(
            f"no platform URL: pass url=... or set {ENV_URL} (JupyterHub sets it in every kernel)")
    if (username is None) != (password is None):
        raise ValueError("signing in needs both username and password")
    dashboard = False
    if token is None and password is None:
        token = os.environ.get(ENV_TOKEN) or None
        refresh_token = refresh_token or os.environ.get(ENV_REFRESH_TOKEN) or None
        if token is None and os.environ.get(ENV_DASHBOARD_TOKEN):
            token, dashboard = os.environ[ENV_DASHBOARD_TOKEN], True
    hub = token is None and password is None and in_hub_kernel()
    if token is None and password is None and not hub:
        raise ValueError(
            f"no credentials: pass token=..., or username=... and password=..., or set "
            f"{ENV_TOKEN}, or run in a JupyterHub kernel of the platform")
    base = base_url(url)
    session = http_session(max_workers)
    auth_session = http_session(2)
    source: HubTokenSource | DashboardTokenSource | None = None
    if hub:
        source = HubTokenSource.from_environment(base, auth_session, timeout)
    elif dashboard:
        assert token is not None
        source = DashboardTokenSource(base, token, auth_session, timeout)
        # Renewed by any read in the second half of its life (the margin is capped at half),
        # so a page in use keeps going; one left idle past the token's end signs in again.
        refresh_margin = float("inf")
    auth = BearerAuth(
        base, token, refresh_token=refresh_token, username=username, password=password,
        margin=refresh_margin, session=auth_session, timeout=timeout, source=source,
    )
    if hub:
        auth.renew()  # a refusal (a disabled user) shows here, not at the first read
    elif token is None:
        auth.login()
    session.auth = auth
    from .client import Client

    return Client(base, session, max_workers=max_workers, cache_dir=cache_dir, timeout=timeout)


def signed_client(base: str, token: str, *, cache_dir: str | Path | None = None,
                   max_workers: int = 8, timeout: float = 30.0) -> Client:
    from .client import Client

    session = http_session(max_workers)
    session.auth = SignedUrlAuth(token)
    return Client(base, session, max_workers=max_workers, cache_dir=cache_dir, timeout=timeout)


def connect_signed(
    url: str,
    *,
    cache_dir: str | Path | None = None,
    max_workers: int = 8,
    timeout: float = 30.0,
) -> Client:
    """A client that uses only a signed URL (no sign-in, no refresh).

    Parameters
    ----------
    url : str
        A signed DICOMweb URL, ``http://host:port/api/pacs/dicom-web/studies/<uid>?token=…``
        (what :meth:`Client.sign` or ``POST /api/pacs/sign`` return).

    Every request the client sends, metadata and frames included, carries
    the token in its query string; requests outside the token's studies are
    refused by the server (:class:`requests.HTTPError` 403), and once the
    token expires the client raises :class:`~.auth.TokenExpiredError`.
    """
    parts = urlsplit(url)
    tokens = [v for k, v in parse_qsl(parts.query) if k == "token"]
    if len(tokens) != 1:
        raise ValueError(f"not a signed URL (it needs exactly one token= parameter): {redact(url)}")
    claims = jwt_claims(tokens[0])
    if claims and claims.get("typ") not in (None, "signed"):
        raise ValueError(f"the token in this URL is a {claims.get('typ')!r} token, not a signed URL")
    return signed_client(base_url(url), tokens[0], cache_dir=cache_dir,
                          max_workers=max_workers, timeout=timeout)


__all__ = ["DICOMWEB_PATH", "ENV_REFRESH_TOKEN", "ENV_TOKEN", "ENV_URL", "base_url",
           "connect", "connect_signed", "http_session", "signed_client"]
