"""The platform's DICOMweb from Python: sign in, find studies, load volumes.

Modules, by what they hold:

* :mod:`.client` — :func:`connect`, :func:`connect_signed`, :class:`Client`
  (built on ``dicomweb_client.DICOMwebClient``), study/series summaries,
  ``load_series`` / ``load_study``.
* :mod:`.auth` — bearer token that renews itself; signed-URL query token.
* :mod:`.frames` — pixel format, the decoder table keyed by transfer syntax,
  multipart parsing.
* :mod:`.cache` — on-disk frame and metadata cache.

Names are imported on first use, so ``import neuronova_lib.dicomweb.frames``
does not pull in requests and dicomweb-client.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Client": "client",
    "SeriesSummary": "client",
    "SignedStudy": "client",
    "StudySummary": "client",
    "connect": "client",
    "connect_signed": "client",
    "BearerAuth": "auth",
    "SignedUrlAuth": "auth",
    "TokenExpiredError": "auth",
    "FrameCache": "cache",
    "FrameDecodeError": "frames",
    "CodecUnavailableError": "frames",
    "PixelFormat": "frames",
    "decode_frame": "frames",
}

__all__ = [
    "BearerAuth",
    "Client",
    "CodecUnavailableError",
    "FrameCache",
    "FrameDecodeError",
    "PixelFormat",
    "SeriesSummary",
    "SignedStudy",
    "SignedUrlAuth",
    "StudySummary",
    "TokenExpiredError",
    "connect",
    "connect_signed",
    "decode_frame",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)
