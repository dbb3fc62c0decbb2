"""Cross-site request refusal (Fetch Metadata, Origin) and safe redirect targets.

Two browser rules the sign-in and nginx's ``auth_request`` share:

* A state-changing request that a browser authenticated with the session cookie
  must come from the platform's own pages. The cookie is ``SameSite=Strict``
  already; on top of it (older browsers, same-site sibling hosts) the request is
  refused unless ``Sec-Fetch-Site`` says ``same-origin`` or, where a browser sends
  no Fetch Metadata, ``Origin`` equals the platform's public origin. Pages we do
  not write (the MLflow UI's ajax POSTs) cannot add a token header, so this check
  is what protects them; the platform's own forms carry a synchronizer token too.
* ``next`` after sign-in is a path on this site only: never ``//host``,
  ``https://…``, a backslash (browsers read ``/\\host`` as ``//host``) or a
  control character.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

#: Methods that change nothing (RFC 9110 safe methods): no cross-site check.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def cross_site_refusal(method: str, headers: Mapping[str, str],
                       public_origin: str) -> str | None:
    """Why a cookie-authenticated ``method`` request is refused as cross-site, else ``None``.

    ``headers`` are the browser's request headers (case-insensitive mapping).
    """
    if method.upper() in SAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site")
    if site is not None:
        if site == "same-origin":
            return None
        return (f"refused: a {method} from another site (Sec-Fetch-Site: {site[:32]}) "
                "cannot use your session")
    origin = headers.get("origin")
    if origin is None:
        return (f"refused: a {method} with the session cookie must come from a browser "
                "page of this platform (no Sec-Fetch-Site or Origin header); programs "
                "send 'Authorization: Bearer <token>' instead")
    if origin.rstrip("/") == public_origin:
        return None
    return (f"refused: a {method} from origin {origin[:100]!r} cannot use your session "
            f"(this platform is {public_origin})")


def safe_next(target: str | None, default: str = "/") -> str:
    """``target`` if it is a same-origin path (``/…``), else ``default``."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
