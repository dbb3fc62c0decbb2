"""Encode one frame to an HTJ2K codestream and decode one back: the checks around the backends.

The backends (:mod:`.backends`) only run a library. This module decides what
to ask of them and checks what they return against what DICOM needs:

* the codestream declares the frame's true precision (Bits Stored) and sign
  (Pixel Representation), which imagecodecs cannot be told directly — see
  :func:`.codestream.set_precision`;
* ``…4.201`` and ``…4.202`` are reversible (5/3 wavelet, no quantisation);
  ``…4.202`` also has RPCL progression, a TLM marker and a tile-part per
  resolution level;
* decoding tries the backends in their measured order and falls back to the
  next one when a backend fails, so a missing or broken library costs speed,
  not function.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from . import backends
from .codestream import CodestreamInfo, parse, set_precision
from .errors import BackendUnavailableError, CodestreamError, DecodeError, UnsupportedImageError
from .uids import HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL, HTJ2K_LOSSY, LOSSLESS_SYNTAXES, check_syntax

logger = logging.getLogger(__name__)

#: Wavelet decomposition levels. Measured by ``benchmarks/htj2k.py`` on the demo
#: MR frames (512×512 and 240×240): 5 levels compress within 0.05 % of 6 or 7,
#: 0.2-0.3 % better than 4 and 1-1.5 % better than 3, at the same decode
#: speed; each level is one more halving for reduced-resolution decoding.
#: Code-blocks stay at OpenJPH's 64×64 (the largest HTJ2K allows): 32×32
#: loses 0.9 %, 16×16 3 %, 32×128 gains 0.04 % (and imagecodecs cannot set it).
DECOMPOSITIONS = 5
#: Largest Bits Stored this encoder accepts (MR and CT use 8-16).
MAX_BITS = 16
#: Lossy quality scale: the quantisation step is 2**((100 - quality) / 10)
#: stored-value units, so quality 100 steps by one unit (near-lossless),
#: 90 by 2, 80 by 4, 50 by 32.
QUALITY_RANGE = (1.0, 100.0)
# OpenJPH accepts relative quantisation steps in this range (ojph_compress -qstep).
_QSTEP_RANGE = (1e-5, 0.5)


def encode(
    frame: np.ndarray,
    *,
    syntax: str = HTJ2K_LOSSLESS,
    quality: float | None = None,
    bits_stored: int | None = None,
) -> bytes:
    """Encode one monochrome frame as an HTJ2K codestream for ``syntax``.

    Parameters
    ----------
    frame : numpy.ndarray
        2-D integer array ``(rows, columns)``; signed dtypes are coded as
        signed samples (Pixel Representation 1). Any size from 1×1 up; odd
        sizes are fine.
    syntax : str
        :data:`HTJ2K_LOSSLESS` (default), :data:`HTJ2K_LOSSLESS_RPCL` (RPCL
        progression, TLM marker and a tile-part per resolution, for streaming
        viewers), or :data:`HTJ2K_LOSSY`.
    quality : float, optional
        Only with :data:`HTJ2K_LOSSY`: 1-100, higher is better; the
        quantisation step is ``2 ** ((100 - quality) / 10)`` stored-value
        units (quality 100: about ±1, 80: step 4). Without it
        :data:`HTJ2K_LOSSY` is coded reversibly (lossless), which that
        syntax allows.
    bits_stored : int, optional
        DICOM Bits Stored: the precision the codestream declares, 1-16.
        Defaults to the dtype's size for 8- and 16-bit dtypes. Pass it for
        12-bit data in ``uint16`` so that decoders (and pydicom) see 12-bit
        samples, as DICOM requires.

    Returns
    -------
    bytes
        A raw codestream (starting with SOC), as one DICOM frame holds it.

    Raises
    ------
    UnsupportedImageError
        For a frame that is not a non-empty 2-D integer array, more than 16
        bits, or values that do not fit ``bits_stored`` and the sign.
    ValueError
        For an unknown syntax, ``quality`` with a lossless syntax or out of range.
    TypeError
        For a ``quality`` that is not a number.
    BackendUnavailableError
        If no encoder library is installed (``pip install imagecodecs``).
    """
    check_syntax(syntax)
    reversible = _check_quality(syntax, quality)
    arr = np.asarray(frame)
    precision, signed = _check_frame(arr, bits_stored)
    # OpenJPH declares the container size as the precision: code in the
    # smallest container, then lower the declared precision to Bits Stored.
    container = 8 if precision <= 8 else 16
    backend = backends.encoder()
    declared = declared_precision(precision)
    samples = _to_container(arr, container, signed, declared)
    qstep = 0.0
    if not reversible:
        step = 2.0 ** ((100.0 - float(quality or 100.0)) / 10.0)
        qstep = min(max(step / 2.0**container, _QSTEP_RANGE[0]), _QSTEP_RANGE[1])
    codestream = backend.encode(
        samples,
        reversible=reversible,
        qstep=qstep,
        decompositions=DECOMPOSITIONS,
        rpcl_options=syntax == HTJ2K_LOSSLESS_RPCL,
    )
    if declared != container:
        codestream = set_precision(codestream, declared)
    _check_encoded(parse(codestream), arr.shape, declared, signed, syntax, reversible)
    return codestream


def decode(codestream: bytes, *, reduce: int = 0, backend: str | None = None) -> np.ndarray:
    """Decode one codestream to a numpy array, at full or reduced resolution.

    Parameters
    ----------
    codestream : bytes-like
        A raw HTJ2K (or classic JPEG 2000) codestream, e.g. one DICOM frame.
    reduce : int
        Resolution levels to skip: 0 is full size, each level halves rows
        and columns (rounding up), which a thumbnail or a viewer's first
        paint can use at a fraction of the decoding cost. At most the
        codestream's decomposition levels (5 for this module's encoder).
    backend : str, optional
        ``"openjph"``, ``"imagecodecs-openjpeg"`` or ``"openjpeg"`` to use one
        backend only; by default the fastest available is tried first and
        the others are fallbacks (see :mod:`.backends`).

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` for one component (``(rows, columns, samples)``
        otherwise), ``uint8``/``int8`` up to 8 bits of precision,
        ``uint16``/``int16`` up to 16, signed when the codestream is.

    Raises
    ------
    CodestreamError
        If the bytes are not a JPEG 2000 codestream.
    ValueError
        If ``reduce`` is out of range.
    BackendUnavailableError
        If the named backend is missing or cannot do this decode.
    DecodeError
        If every backend tried failed (the codestream is corrupt).
    """
    data = bytes(codestream) if not isinstance(codestream, bytes) else codestream
    info = parse(data)
    if not isinstance(reduce, int) or not 0 <= reduce <= info.decompositions:
        raise ValueError(
            f"reduce must be an integer from 0 to {info.decompositions} "
            f"(the codestream's decomposition levels), got {reduce!r}"
        )
    part1 = not info.is_htj2k
    if backend is not None:
        chosen = backends.get(backend)
        if reduce and not chosen.CAN_REDUCE:
            raise BackendUnavailableError(
                f"backend {backend!r} cannot decode reduced resolutions; use 'openjph'"
            )
        if part1 and not chosen.DECODES_PART1:
            raise BackendUnavailableError(
                f"backend {backend!r} reads only HTJ2K block coding; this codestream is "
                "classic JPEG 2000: use 'openjpeg' or 'imagecodecs-openjpeg'"
            )
        candidates = [chosen]
    else:
        candidates = backends.decoders(reduce=reduce > 0, part1=part1)
        if not candidates:
            raise BackendUnavailableError(
                "no installed HTJ2K decoder can do this "
                f"({'reduced resolution' if reduce else 'classic JPEG 2000' if part1 else 'decode'})"
                ": pip install imagecodecs pylibjpeg-openjpeg"
            )
    expected = info.shape_at(reduce)
    failures = []
    for candidate in candidates:
        try:
            arr = candidate.decode(data, reduce)
            _check_decoded(arr, info, expected)
            return _clamp_reduced(arr, info) if reduce or info.reduced else arr
        except Exception as exc:  # noqa: BLE001 - report it, then try the next backend
            logger.debug("HTJ2K backend %s failed: %s", candidate.NAME, exc)
            failures.append(f"{candidate.NAME}: {exc!r}")
    raise DecodeError(
        "could not decode the codestream (corrupt or truncated?); " + "; ".join(failures)
    )


def has_headroom(info: CodestreamInfo) -> bool:
    """Whether a reduced decode of this codestream comes back right: its precision is
    below its output type's bits (12 of 16, as the platform's encoder declares MR),
    so the values the lower resolutions overshoot by fit and :func:`decode` clamps them."""
    return info.precision not in (8, 16)


def _clamp_reduced(arr: np.ndarray, info: CodestreamInfo) -> np.ndarray:
    """The lower resolutions of a reversible 5/3 transform overshoot the sample range
    next to sharp edges (brain beside the zero background), and the decoders store the
    result in the output type unclamped: below zero wraps to the top of ``uint16``.
    With headroom the wrapped values are told apart and the range restored; without
    (:func:`has_headroom`), they cannot be, and the caller should subsample a full decode."""
    if not has_headroom(info):
        return arr
    bits = arr.dtype.itemsize * 8
    if info.is_signed:
        low, high = -(1 << (info.precision - 1)), (1 << (info.precision - 1)) - 1
        return np.clip(arr, low, high).astype(arr.dtype, copy=False)
    top = (1 << info.precision) - 1
    wrapped = arr >= (top + 1) + ((1 << bits) - (top + 1)) // 2  # negative, wrapped around
    out = np.minimum(arr, top)
    out[wrapped] = 0
    return out


def declared_precision(bits_stored: int) -> int:
    """The precision :func:`encode` writes for ``bits_stored``: the same, but 2 for 1 and 10 for 9.

    The codestream's precision can be lowered below the container's (8 or
    16 bits) by at most 7 minus the encoder's guard bits, i.e. 6 for OpenJPH.
    """
    container = 8 if bits_stored <= 8 else 16
    return max(bits_stored, container - (7 - backends.encoder().GUARD_BITS))


def codestream_info(codestream: bytes) -> CodestreamInfo:
    """Return what a codestream's headers declare (size, precision, sign, progression…)."""
    return parse(codestream)


def _check_quality(syntax: str, quality: float | None) -> bool:
    """Validate ``quality`` for ``syntax``; return whether coding is reversible."""
    if quality is None:
        return True
    if syntax != HTJ2K_LOSSY:
        raise ValueError(
            f"quality={quality!r} asks for lossy coding but {syntax} is lossless only; "
            f"use syntax=HTJ2K_LOSSY ({HTJ2K_LOSSY}) or leave quality out"
        )
    low, high = QUALITY_RANGE
    if isinstance(quality, bool) or not isinstance(quality, (int, float)):
        raise TypeError(f"quality must be a number from {low:g} to {high:g}, got {quality!r}")
    if not (low <= float(quality) <= high) or math.isnan(float(quality)):
        raise ValueError(f"quality must be from {low:g} to {high:g}, got {quality!r}")
    return False


def _check_frame(arr: np.ndarray, bits_stored: int | None) -> tuple[int, bool]:
    """Return ``(precision, signed)`` for a frame the encoder can take, or raise."""
    if arr.ndim != 2:
        raise UnsupportedImageError(
            f"expected one 2-D monochrome frame (rows, columns), got shape {arr.shape}; "
            "encode multi-frame data frame by frame, colour images are not supported"
        )
    if arr.size == 0:
        raise UnsupportedImageError(f"the frame is empty (shape {arr.shape})")
    if arr.dtype.kind not in "ui" or arr.dtype == np.bool_:
        raise UnsupportedImageError(
            f"expected integer samples, got dtype {arr.dtype}; "
            "HTJ2K here codes stored values, not floats"
        )
    signed = arr.dtype.kind == "i"
    if bits_stored is None:
        if arr.dtype.itemsize > 2:
            raise UnsupportedImageError(
                f"dtype {arr.dtype} needs bits_stored= (at most {MAX_BITS}) to be given"
            )
        bits_stored = arr.dtype.itemsize * 8
    if isinstance(bits_stored, bool) or not isinstance(bits_stored, (int, np.integer)):
        raise UnsupportedImageError(f"bits_stored must be an integer, got {bits_stored!r}")
    bits = int(bits_stored)
    if not 1 <= bits <= MAX_BITS:
        raise UnsupportedImageError(
            f"Bits Stored {bits} is not supported: this encoder takes 1 to {MAX_BITS} bits"
        )
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    amin, amax = int(arr.min()), int(arr.max())
    if amin < low or amax > high:
        kind = "signed" if signed else "unsigned"
        raise UnsupportedImageError(
            f"values {amin}..{amax} do not fit {bits} {kind} bits ({low}..{high}); "
            "check Bits Stored and Pixel Representation, or mask the unused high bits"
        )
    return bits, signed


def _to_container(arr: np.ndarray, container: int, signed: bool, declared: int) -> np.ndarray:
    """Samples in a ``container``-bit dtype, offset so the declared precision decodes right."""
    dtype = np.dtype(f"{'i' if signed else 'u'}{container // 8}")
    if signed:
        return np.ascontiguousarray(arr, dtype=dtype)
    # The encoder subtracts 2**(container-1); a decoder reading `declared`
    # bits adds back 2**(declared-1). Pre-adding the difference makes both agree.
    offset = (1 << (container - 1)) - (1 << (declared - 1))
    out = np.array(arr, dtype=dtype, order="C", copy=True)
    if offset:
        out += dtype.type(offset)
    return out


def _check_encoded(
    info: CodestreamInfo,
    shape: tuple[int, ...],
    precision: int,
    signed: bool,
    syntax: str,
    reversible: bool,
) -> None:
    """Refuse a codestream whose headers are not what was asked for."""
    problems = []
    if (info.rows, info.columns) != shape[:2]:
        problems.append(f"size {info.rows}x{info.columns} != {shape[0]}x{shape[1]}")
    if info.precision != precision or info.is_signed != signed:
        problems.append(f"precision {info.precision} signed={info.is_signed}")
    if not info.is_htj2k:
        problems.append("not HT block coded")
    if reversible != info.reversible:
        problems.append(f"reversible={info.reversible}")
    if syntax in LOSSLESS_SYNTAXES and not info.reversible:
        problems.append("irreversible transform for a lossless syntax")
    if syntax == HTJ2K_LOSSLESS_RPCL and (
        info.progression != "RPCL" or not info.has_tlm or info.tile_parts < 2
    ):
        problems.append(
            f"RPCL options missing: {info.progression}, TLM={info.has_tlm}, "
            f"{info.tile_parts} tile-parts"
        )
    if problems:
        raise CodestreamError("the encoder wrote an unexpected codestream: " + "; ".join(problems))


def _check_decoded(arr: np.ndarray, info: CodestreamInfo, expected: tuple[int, int]) -> None:
    """Refuse a decoded array whose shape or sign disagrees with the headers."""
    if arr.shape[:2] != expected or (arr.ndim == 3) != (info.components > 1):
        raise DecodeError(f"decoded shape {arr.shape} does not match the header's {expected}")
    if (arr.dtype.kind == "i") != info.is_signed:
        raise DecodeError(f"decoded dtype {arr.dtype} does not match signed={info.is_signed}")
