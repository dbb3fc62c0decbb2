"""HTJ2K codec backends: one module per library, chosen by the tables below.

Each backend module says what it can do and does one thing, as pydicom's pixel
plugins do:

* ``NAME`` and ``DEPENDENCIES`` (what to ``pip install``), ``is_available()``,
  ``version()``;
* ``CAN_ENCODE`` / ``encode(frame, *, reversible, qstep, decompositions, rpcl_options)``;
* ``CAN_REDUCE`` / ``decode(codestream, reduce)``; ``DECODES_PART1`` when it also
  reads classic JPEG 2000 block coding.

The order of :data:`DECODER_PREFERENCE` is a measurement, not a taste: the
single-threaded decode time per pixel of 12-bit MR frames from
``benchmarks/htj2k.py`` on the 2-core development machine (Python 3.11,
imagecodecs 2026.3.6 with OpenJPH 0.26.3 and OpenJPEG 2.5.4,
pylibjpeg-openjpeg 2.6), 512×512 / 240×240 frames: openjph 4.1 / 4.5 ns
(about 1.1 ms per 512×512 frame), imagecodecs' OpenJPEG 7.8 / 9.2 ns,
pylibjpeg-openjpeg 8.1 / 10.3 ns. Only openjph can skip resolution levels.
Re-run the benchmark before reordering.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType

from ..errors import BackendUnavailableError

#: Backend name → module (relative to this package).
BACKENDS: dict[str, str] = {
    "openjph": ".openjph",
    "imagecodecs-openjpeg": ".imagecodecs_openjpeg",
    "openjpeg": ".openjpeg",
}
#: Decoders, fastest first (see the module docstring for the numbers).
DECODER_PREFERENCE: tuple[str, ...] = ("openjph", "imagecodecs-openjpeg", "openjpeg")
#: Encoders, preferred first: only OpenJPH encodes HTJ2K among the PyPI codecs.
ENCODER_PREFERENCE: tuple[str, ...] = ("openjph",)


def module(name: str) -> ModuleType:
    """Return the backend module called ``name`` (installed or not)."""
    try:
        path = BACKENDS[name]
    except KeyError:
        raise BackendUnavailableError(
            f"unknown HTJ2K backend {name!r}; choose one of {', '.join(BACKENDS)}"
        ) from None
    return importlib.import_module(path, __name__)


def get(name: str) -> ModuleType:
    """Return the backend ``name``, raising if its library is not installed."""
    backend = module(name)
    if not backend.is_available():
        raise BackendUnavailableError(
            f"HTJ2K backend {name!r} is not available: "
            f"pip install {' '.join(repr(d) for d in backend.DEPENDENCIES)}"
        )
    return backend


def decoders(*, reduce: bool = False, part1: bool = False) -> list[ModuleType]:
    """Available decoders in order of preference, able to reduce / read Part 1 if asked."""
    return list(_decoders(reduce, part1))


@cache  # what is installed does not change while the process runs; this is per frame
def _decoders(reduce: bool, part1: bool) -> tuple[ModuleType, ...]:
    found = []
    for name in DECODER_PREFERENCE:
        backend = module(name)
        if not backend.is_available():
            continue
        if (reduce and not backend.CAN_REDUCE) or (part1 and not backend.DECODES_PART1):
            continue
        found.append(backend)
    return tuple(found)


def encoder() -> ModuleType:
    """The preferred available encoder."""
    for name in ENCODER_PREFERENCE:
        backend = module(name)
        if backend.is_available():
            return backend
    wanted = {d for n in ENCODER_PREFERENCE for d in module(n).DEPENDENCIES}
    raise BackendUnavailableError(
        f"no HTJ2K encoder is installed: pip install {' '.join(sorted(wanted))}"
    )


def report() -> dict[str, dict[str, object]]:
    """What each backend can do here and its version (for benchmarks and bug reports)."""
    out: dict[str, dict[str, object]] = {}
    for name in BACKENDS:
        backend = module(name)
        available = backend.is_available()
        out[name] = {
            "available": available,
            "version": backend.version() if available else None,
            "encode": backend.CAN_ENCODE,
            "reduce": backend.CAN_REDUCE,
            "part1": backend.DECODES_PART1,
            "dependencies": list(backend.DEPENDENCIES),
        }
    return out
