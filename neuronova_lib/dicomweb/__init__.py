"""The platform's DICOMweb from Python: sign in, find studies, load volumes.

Modules, by what they hold:

Split by concern, the way dicomweb-client splits its own:

* :mod:`.client` — :class:`Client`, the transport (built on
  ``dicomweb_client.DICOMwebClient``): searches, signing, frames,
  ``load_series`` / ``load_study``.
* :mod:`.session` — :func:`connect`, :func:`connect_signed`: the platform URL,
  the HTTP session (pool, retries), sign-in.
* :mod:`.auth` — bearer token that renews itself; signed-URL query token.
* :mod:`.results` — :class:`StudySummary`, :class:`SeriesSummary`,
  :class:`SignedStudy`: what searches and signing return.
* :mod:`.brats` — which series is T1, T1c, T2 or FLAIR.
* :mod:`.uid_arguments` — UID arguments: a ``str`` holding a UID, else
  ``TypeError``.
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
    "SeriesSummary": "results",
    "SignedStudy": "results",
    "StudySummary": "results",
    "BRATS_CHANNELS": "brats",
    "classify_brats_series": "brats",
    "match_brats_series": "brats",
    "connect": "session",
    "connect_signed": "session",
    "BearerAuth": "auth",
    "SignedUrlAuth": "auth",
    "TokenExpiredError": "auth",
    "FrameCache": "cache",
    "FrameDecodeError": "frames",
    "CodecUnavailableError": "frames",
    "PixelFormat": "frames",
    "decode_frame": "frames",
    "Segmentation": "segmentation",
    "seg_masks": "segmentation",
}

__all__ = [
    "BRATS_CHANNELS",
    "BearerAuth",
    "Client",
    "CodecUnavailableError",
    "FrameCache",
    "FrameDecodeError",
    "PixelFormat",
    "Segmentation",
    "SeriesSummary",
    "SignedStudy",
    "SignedUrlAuth",
    "StudySummary",
    "TokenExpiredError",
    "classify_brats_series",
    "connect",
    "connect_signed",
    "decode_frame",
    "match_brats_series",
    "seg_masks",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)
