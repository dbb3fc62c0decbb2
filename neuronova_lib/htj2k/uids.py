"""The three DICOM transfer syntaxes for HTJ2K (PS3.6 Table A-1) and their names.

The constants live in :mod:`neuronova_lib.uids` with every other UID the
platform names; they are re-exported here for the codec's callers.
"""

from __future__ import annotations

from neuronova_lib.uids import (
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    HTJ2K_LOSSLESS_SYNTAXES as LOSSLESS_SYNTAXES,
    HTJ2K_LOSSY,
    HTJ2K_SYNTAXES,
    SYNTAX_NAMES,
)

__all__ = ["HTJ2K_LOSSLESS", "HTJ2K_LOSSLESS_RPCL", "HTJ2K_LOSSY", "HTJ2K_SYNTAXES",
           "LOSSLESS_SYNTAXES", "SYNTAX_NAMES", "check_syntax"]


def check_syntax(syntax: str) -> str:
    """Return ``syntax`` if it is one of :data:`HTJ2K_SYNTAXES`, else raise ``ValueError``."""
    if syntax not in HTJ2K_SYNTAXES:
        known = ", ".join(f"{uid} ({SYNTAX_NAMES[uid]})" for uid in HTJ2K_SYNTAXES)
        raise ValueError(f"{syntax!r} is not an HTJ2K transfer syntax; use one of {known}")
    return syntax
