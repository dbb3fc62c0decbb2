"""Backend: OpenJPEG as bundled by ``imagecodecs`` — a decode-only fallback.

Same library as :mod:`.openjpeg` but another build (and the GIL released);
kept because it comes with the ``imagecodecs`` dependency the encoder needs
anyway, so a decoder is there even without ``pylibjpeg-openjpeg``.
"""

from __future__ import annotations

import importlib.util
from functools import cache

import numpy as np

NAME = "imagecodecs-openjpeg"
DEPENDENCIES = ("imagecodecs>=2025.3",)
CAN_ENCODE = False
CAN_REDUCE = False
DECODES_PART1 = True


@cache
def is_available() -> bool:
    """Return whether imagecodecs is installed and was built with OpenJPEG."""
    if importlib.util.find_spec("imagecodecs") is None:
        return False
    import imagecodecs

    return bool(getattr(imagecodecs, "JPEG2K", None) and imagecodecs.JPEG2K.available)


def version() -> str:
    """Return the library versions."""
    import imagecodecs

    return f"imagecodecs {imagecodecs.__version__}, {imagecodecs.jpeg2k_version()}"


def decode(codestream: bytes, reduce: int = 0) -> np.ndarray:
    """Decode at full resolution on one thread (``reduce`` must be 0)."""
    if reduce:
        raise ValueError("imagecodecs' OpenJPEG binding cannot decode reduced resolutions")
    import imagecodecs

    return np.asarray(imagecodecs.jpeg2k_decode(codestream, numthreads=1))
