"""The three DICOM transfer syntaxes for HTJ2K (PS3.6 Table A-1) and their names."""

from __future__ import annotations

from typing import Final

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
#: The syntaxes whose pixel data must decode to exactly the original values.
LOSSLESS_SYNTAXES: Final = (HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL)

SYNTAX_NAMES: Final = {
    HTJ2K_LOSSLESS: "HTJ2K Lossless Only",
    HTJ2K_LOSSLESS_RPCL: "HTJ2K with RPCL Options Lossless Only",
    HTJ2K_LOSSY: "HTJ2K",
}


def check_syntax(syntax: str) -> str:
    """Return ``syntax`` if it is one of :data:`HTJ2K_SYNTAXES`, else raise ``ValueError``."""
    if syntax not in HTJ2K_SYNTAXES:
        known = ", ".join(f"{uid} ({SYNTAX_NAMES[uid]})" for uid in HTJ2K_SYNTAXES)
        raise ValueError(f"{syntax!r} is not an HTJ2K transfer syntax; use one of {known}")
    return syntax
