"""Backend: OpenJPEG through ``pylibjpeg-openjpeg`` — pydicom's own HTJ2K decoder.

A decode-only fallback: it reads classic JPEG 2000 as well as HTJ2K, but its
Python API has no reduced-resolution decoding.
"""

from __future__ import annotations

import importlib.util
from functools import cache

import numpy as np

NAME = "openjpeg"
DEPENDENCIES = ("pylibjpeg-openjpeg>=2.3",)
CAN_ENCODE = False
CAN_REDUCE = False
DECODES_PART1 = True


@cache
def is_available() -> bool:
    """Return whether ``pylibjpeg-openjpeg`` (import name ``openjpeg``) is installed."""
    return importlib.util.find_spec("openjpeg") is not None


def version() -> str:
    """Return the library versions."""
    from importlib.metadata import version as dist_version

    return f"pylibjpeg-openjpeg {dist_version('pylibjpeg-openjpeg')}"


def decode(codestream: bytes, reduce: int = 0) -> np.ndarray:
    """Decode at full resolution (``reduce`` must be 0)."""
    if reduce:
        raise ValueError("pylibjpeg-openjpeg cannot decode reduced resolutions")
    import openjpeg

    return np.asarray(openjpeg.decode(codestream, j2k_format=0))
