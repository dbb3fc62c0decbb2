"""pydicom pixel-data plugins for HTJ2K: an encoder (pydicom 3.0 has none) and a faster decoder.

The module follows pydicom's plugin contract (``is_available(uid)``,
``ENCODER_DEPENDENCIES``/``DECODER_DEPENDENCIES``, and frame functions
``(src: bytes, runner) -> bytes``), so :func:`register` can hand it to
pydicom's own registries. After registration::

    ds.decompress()                      # compress() takes uncompressed data only
    ds.compress(HTJ2K_LOSSLESS)          # or HTJ2K_LOSSLESS_RPCL
    ds.compress(HTJ2K_LOSSY, htj2k_quality=80)
    ds.pixel_array                       # decoded by OpenJPH first, then the others

pydicom keeps its encoders in a private table
(``pydicom.pixels.encoders.base._PIXEL_DATA_ENCODERS``) and its per-syntax
validation profiles in ``ENCODING_PROFILES``; both are used here, which is
why ``pyproject.toml`` pins pydicom exactly and ``tests/test_htj2k.py`` tests
the registration. Decoding uses only the public ``add_plugin`` and
``remove_plugin`` of pydicom's decoders.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import numpy as np

from . import backends
from .codec import decode, encode
from .uids import HTJ2K_SYNTAXES

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.pixels.decoders.base import DecodeRunner
    from pydicom.pixels.encoders.base import EncodeRunner

logger = logging.getLogger(__name__)

#: The label of these plugins in pydicom's registries.
PLUGIN = "neuronova"
#: Encoder option for lossy ``…4.203``: see :func:`neuronova_lib.htj2k.encode` ``quality``.
QUALITY_OPTION = "htj2k_quality"

_DEPENDENCIES = ("numpy", "imagecodecs>=2025.3")
ENCODER_DEPENDENCIES = {uid: _DEPENDENCIES for uid in HTJ2K_SYNTAXES}
DECODER_DEPENDENCIES = {uid: _DEPENDENCIES for uid in HTJ2K_SYNTAXES}

# What the encoder accepts, in pydicom's ENCODING_PROFILES form
# (Photometric Interpretation, Samples per Pixel, Pixel Representation,
# Bits Allocated, Bits Stored): the monochrome rows of PS3.5 Table 8.2.4-1
# that this encoder implements. Colour is refused before any encoding starts.
_PROFILES = [
    ("MONOCHROME1", 1, (0, 1), (8, 16), range(1, 17)),
    ("MONOCHROME2", 1, (0, 1), (8, 16), range(1, 17)),
]
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_lock = threading.Lock()


def is_available(uid: str) -> bool:
    """Return whether this plugin can encode/decode ``uid`` here (pydicom contract)."""
    return uid in HTJ2K_SYNTAXES and backends.module("openjph").is_available()


def encode_frame(src: bytes, runner: EncodeRunner) -> bytes:
    """Encode one frame of little-endian pixel data handed over by pydicom.

    pydicom gives 1 byte per sample up to 8 bits stored and 2 up to 16; the
    bits above Bits Stored carry no pixel data (PS3.5 §8.1.1), so they are
    masked (unsigned) or replaced by the sign (signed) before encoding.
    """
    photometric = str(runner.photometric_interpretation)
    if runner.samples_per_pixel != 1 or photometric not in _MONOCHROME:
        raise ValueError(
            f"the HTJ2K encoder takes MONOCHROME1/2 with 1 sample per pixel, not "
            f"{photometric} with {runner.samples_per_pixel}"
        )
    bits = int(runner.bits_stored)
    signed = runner.pixel_representation == 1
    itemsize = 1 if bits <= 8 else 2
    dtype = np.dtype(f"<{'i' if signed else 'u'}{itemsize}")
    count = runner.rows * runner.columns
    arr = np.frombuffer(src, dtype=dtype, count=count).reshape(runner.rows, runner.columns)
    arr = _stored_bits(arr, bits, signed)
    quality = runner.get_option(QUALITY_OPTION, None)
    return encode(arr, syntax=runner.transfer_syntax, quality=quality, bits_stored=bits)


def decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """Decode one HTJ2K frame for pydicom, with the fastest available backend.

    Mirrors pydicom's own pylibjpeg plugin: the pixel container follows the
    codestream's precision, and OpenJPEG/OpenJPH return YBR_ICT/YBR_RCT
    as RGB.
    """
    arr = decode(src)
    if str(runner.photometric_interpretation) in ("YBR_ICT", "YBR_RCT"):
        runner.set_option("photometric_interpretation", "RGB")
    runner.set_option("bits_allocated", 8 * arr.dtype.itemsize)
    if arr.ndim == 3:
        runner.set_option("planar_configuration", 0)
    return arr.tobytes()


def _stored_bits(arr: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Keep only the ``bits`` low bits of each sample (sign-extended when signed)."""
    spare = 8 * arr.dtype.itemsize - bits
    if spare == 0:
        return arr
    if signed:
        return (arr << spare) >> spare
    return arr & arr.dtype.type((1 << bits) - 1)


def register() -> bool:
    """Add the encoder and decoder to pydicom's registries (idempotent, thread-safe).

    Returns
    -------
    bool
        ``True`` if this call changed the registries, ``False`` if they
        already held the plugins.
    """
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.pixels.encoders import base as encoders
    from pydicom.uid import UID

    changed = False
    with _lock:
        for uid in map(UID, HTJ2K_SYNTAXES):
            entry = encoders._PIXEL_DATA_ENCODERS.get(uid)
            encoder = entry[0] if entry else encoders.Encoder(uid)
            if PLUGIN not in encoder._available and PLUGIN not in encoder._unavailable:
                encoder.add_plugin(PLUGIN, (__name__, "encode_frame"))
                changed = True
            if entry is None:
                encoders._PIXEL_DATA_ENCODERS[uid] = (encoder, "3.0")
            encoders.ENCODING_PROFILES.setdefault(uid, list(_PROFILES))

            decoder = get_decoder(uid)
            if PLUGIN not in decoder._available and PLUGIN not in decoder._unavailable:
                # pydicom tries plugins in insertion order: put this one (OpenJPH,
                # measured fastest) first and re-add the others behind it.
                others = [
                    (label, path) for label, path in _PYDICOM_DECODERS if label in _labels(decoder)
                ]
                for label, _ in others:
                    decoder.remove_plugin(label)
                decoder.add_plugin(PLUGIN, (__name__, "decode_frame"))
                decoder.add_plugins(others)
                changed = True
    if changed:
        logger.debug("registered the HTJ2K plugins with pydicom")
    return changed


# pydicom 3.0.2's own HTJ2K decoding plugins (pydicom/pixels/decoders/base.py).
_PYDICOM_DECODERS = [("pylibjpeg", ("pydicom.pixels.decoders.pylibjpeg", "_decode_frame"))]


def _labels(coder: object) -> set[str]:
    return set(getattr(coder, "_available", {})) | set(getattr(coder, "_unavailable", {}))
