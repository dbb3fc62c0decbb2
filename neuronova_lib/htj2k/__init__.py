"""HTJ2K (High-Throughput JPEG 2000) for DICOM frames: encode, decode, and pydicom plugins.

Front doors::

    from neuronova_lib.htj2k import encode, decode, HTJ2K_LOSSLESS
    cs = encode(frame, bits_stored=12)            # lossless, 5/3 reversible
    full = decode(cs)                             # numpy array, bit-exact
    thumb = decode(cs, reduce=2)                  # quarter size, much faster

Importing this package changes nothing in pydicom. Call :func:`register` to
add its encoder (and its OpenJPH decoder, tried first) to pydicom's
registries, so that ``ds.compress(HTJ2K_LOSSLESS)`` and ``ds.pixel_array``
use them; do it in every process that needs them (a Dask worker, a gate
checker, Orthanc's plugin), as pydicom does with ``add_plugin``::

    from neuronova_lib import htj2k
    htj2k.register()

Modules, by role:

* :mod:`.uids` — the three transfer syntaxes.
* :mod:`.codec` — :func:`encode` / :func:`decode`: checks and backend choice.
* :mod:`.backends` — one module per library (OpenJPH via imagecodecs,
  OpenJPEG via pylibjpeg-openjpeg or imagecodecs), chosen by a measured table.
* :mod:`.codestream` — reads codestream headers; corrects the declared precision.
* :mod:`.pydicom_plugin` — the plugins for pydicom's registries.
* :mod:`.errors` — the exceptions (all ``ValueError``).
"""

from __future__ import annotations

from .backends import report as backend_report
from .codec import (
    DECOMPOSITIONS,
    QUALITY_RANGE,
    codestream_info,
    declared_precision,
    decode,
    encode,
)
from .codestream import CodestreamInfo
from .errors import (
    BackendUnavailableError,
    CodestreamError,
    DecodeError,
    HTJ2KError,
    UnsupportedImageError,
)
from .uids import (
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    HTJ2K_LOSSY,
    HTJ2K_SYNTAXES,
    LOSSLESS_SYNTAXES,
    SYNTAX_NAMES,
)


def register() -> bool:
    """Register the HTJ2K encoder (and decoder) with pydicom; cheap and safe to call again.

    Explicit rather than an import side effect: a process that only decodes
    codestreams with :func:`decode` leaves pydicom as it found it.

    Returns
    -------
    bool
        Whether this call changed pydicom's registries.
    """
    from .pydicom_plugin import register as _register

    return _register()

__all__ = [
    "DECOMPOSITIONS",
    "HTJ2K_LOSSLESS",
    "HTJ2K_LOSSLESS_RPCL",
    "HTJ2K_LOSSY",
    "HTJ2K_SYNTAXES",
    "LOSSLESS_SYNTAXES",
    "QUALITY_RANGE",
    "SYNTAX_NAMES",
    "BackendUnavailableError",
    "CodestreamError",
    "CodestreamInfo",
    "DecodeError",
    "HTJ2KError",
    "UnsupportedImageError",
    "backend_report",
    "codestream_info",
    "declared_precision",
    "decode",
    "encode",
    "register",
]
