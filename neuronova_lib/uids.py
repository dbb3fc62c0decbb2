"""DICOM UIDs in one place: what a UID is, and the transfer syntaxes the platform names.

Every part that accepts a UID from outside asks :func:`valid_uid` — the guard
(a UID in a DICOMweb path), the ingest gate (the UIDs in a file), the STOW-RS
route, the notebook client and its frame cache, and the bulk sources — so
they cannot disagree about whether ``1.02.3`` is a UID (it is not: PS3.5
§9.1 allows a leading zero only in a component that is ``0`` itself).

Light to import (no pydicom, no numpy): Orthanc's Python plugin and the guard
load it on their hot paths.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Final

#: PS3.5 §9.1: components of digits, no leading zero except "0" itself, dot-separated.
_UID_RE: Final = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
#: PS3.5 §9.1: at most 64 characters.
MAX_UID_LENGTH: Final = 64


def valid_uid(text: object) -> bool:
    """Whether ``text`` is a DICOM UID (PS3.5 §9.1).

    Digits and dots, each component without a leading zero (``0`` alone is
    allowed), no empty component, 1 to 64 characters. Anything that is not a
    ``str`` is not a UID.

    Examples
    --------
    >>> valid_uid("1.2.840.10008.1.2.4.201"), valid_uid("1.0.3"), valid_uid("1.02.3")
    (True, True, False)
    """
    return (isinstance(text, str) and 0 < len(text) <= MAX_UID_LENGTH
            and _UID_RE.fullmatch(text) is not None)


def require_uid(value: Any, what: str = "UID") -> str:
    """Return ``value`` if it is a DICOM UID.

    Parameters
    ----------
    value : str
        The candidate.
    what : str
        How to name it in the error (``"StudyInstanceUID"``).

    Raises
    ------
    TypeError
        ``value`` is not a ``str``.
    ValueError
        ``value`` is a string but not a UID (:func:`valid_uid`).
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not valid_uid(value):
        raise ValueError(f"{what} {value[:80]!r} is not a DICOM UID (PS3.5 9.1: digits and "
                         "dots, no leading zeros, at most 64 characters)")
    return value


def name_based_uid(namespace: str, *parts: str | int) -> str:
    """A deterministic UID ``2.25.<n>`` for the thing named by ``parts`` in ``namespace``.

    ``n`` is the integer of a name-based (version 5) UUID, as PS3.5 §B.2 defines
    the ``2.25`` root: the same names always give the same UID (a retried job
    writes the same objects again), different names practically never collide.
    The parts are serialised unambiguously (``("1", "23")`` differs from ``("12", "3")``).

    Examples
    --------
    >>> name_based_uid("urn:neuronova:inference", "job-1", "seg") == name_based_uid(
    ...     "urn:neuronova:inference", "job-1", "seg")
    True
    """
    name = json.dumps([str(p) for p in parts], separators=(",", ":"))
    return f"2.25.{uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, namespace), name).int}"


# ---------------------------------------------------------------- transfer syntaxes (PS3.6 A-1)

IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN: Final = "1.2.840.10008.1.2.2"
#: Syntaxes whose pixel data are not encapsulated.
NATIVE_SYNTAXES: Final = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN,
                                    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN})
#: Syntaxes whose frames are plain little-endian pixel bytes.
NATIVE_LITTLE_ENDIAN: Final = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN})

#: High-Throughput JPEG 2000 Image Compression (Lossless Only).
HTJ2K_LOSSLESS: Final = "1.2.840.10008.1.2.4.201"
#: High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only):
#: RPCL progression and a TLM marker, so a client can fetch a low resolution
#: first from the start of the codestream.
HTJ2K_LOSSLESS_RPCL: Final = "1.2.840.10008.1.2.4.202"
#: High-Throughput JPEG 2000 Image Compression: lossy (or lossless) coding.
HTJ2K_LOSSY: Final = "1.2.840.10008.1.2.4.203"
#: All three, lossless first.
HTJ2K_SYNTAXES: Final = (HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL, HTJ2K_LOSSY)
#: The HTJ2K syntaxes whose pixel data must decode to exactly the original values.
HTJ2K_LOSSLESS_SYNTAXES: Final = (HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL)

SYNTAX_NAMES: Final = {
    HTJ2K_LOSSLESS: "HTJ2K Lossless Only",
    HTJ2K_LOSSLESS_RPCL: "HTJ2K with RPCL Options Lossless Only",
    HTJ2K_LOSSY: "HTJ2K",
}
