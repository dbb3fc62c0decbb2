"""Backend: OpenJPH as bundled by ``imagecodecs`` — the only encoder, and the fastest decoder.

OpenJPH implements only the HT block coder (ISO/IEC 15444-15), so it cannot
decode classic JPEG 2000 (Part 1) codestreams; the OpenJPEG backends can.
Calls are serialised within a process: imagecodecs' OpenJPH wrapper is not
safe to run from several threads at once. Seen here: under concurrent decodes
an "ojph error" raised inside its read callback is swallowed as "exception
ignored" and the call returns a frame of zeros, silently. Processes (Dask
workers) still decode in parallel.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import cache

import numpy as np

NAME = "openjph"
#: What to ``pip install`` when :func:`is_available` is false.
DEPENDENCIES = ("imagecodecs>=2025.3",)
CAN_ENCODE = True
CAN_REDUCE = True
DECODES_PART1 = False
#: OpenJPH writes one guard bit (QCD); the encoder relies on it when it lowers precision.
GUARD_BITS = 1

_lock = threading.Lock()


@cache
def is_available() -> bool:
    """Return whether imagecodecs is installed and was built with OpenJPH."""
    if importlib.util.find_spec("imagecodecs") is None:
        return False
    import imagecodecs

    return bool(getattr(imagecodecs, "HTJ2K", None) and imagecodecs.HTJ2K.available)


def version() -> str:
    """Return the library versions, e.g. ``"imagecodecs 2026.3.6, openjph 0.26.3"``."""
    import imagecodecs

    return f"imagecodecs {imagecodecs.__version__}, {imagecodecs.htj2k_version()}"


def encode(
    frame: np.ndarray,
    *,
    reversible: bool,
    qstep: float,
    decompositions: int,
    rpcl_options: bool,
) -> bytes:
    """Encode a 2-D integer frame; ``qstep`` is relative to the dtype's full range.

    OpenJPH's default progression is RPCL with 64×64 code-blocks; with
    ``rpcl_options`` it also writes a TLM marker and a tile-part per
    resolution, as the ``…4.202`` transfer syntax asks.
    """
    import imagecodecs

    with _lock:
        encoded = imagecodecs.htj2k_encode(
            frame,
            level=None if reversible else qstep,
            reversible=reversible,
            resolutions=decompositions,
            tlm=rpcl_options,
            tilepart=imagecodecs.HTJ2K.TILEPART.RESOLUTIONS if rpcl_options else None,
        )
    return bytes(encoded)


def decode(codestream: bytes, reduce: int = 0) -> np.ndarray:
    """Decode, skipping the ``reduce`` finest resolution levels (read and reconstruction)."""
    import imagecodecs

    skip = (reduce, reduce) if reduce else None
    with _lock:
        decoded = imagecodecs.htj2k_decode(codestream, skipres=skip, planar=False)
    return np.asarray(decoded)
