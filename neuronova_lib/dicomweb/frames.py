"""Frame bytes to numpy: the pixel format, a decoder table keyed by transfer syntax, multipart.

One decoder per family of transfer syntaxes, chosen from a table (as pydicom's
``pixels/decoders`` do), so adding a codec is one line:

==============================================  =========================================
transfer syntax                                 decoder
==============================================  =========================================
Explicit / Implicit VR Little Endian, Deflated  :func:`decode_native` (``np.frombuffer``)
Explicit VR Big Endian (retired)                :func:`decode_native` (byte-swapped)
HTJ2K ``.4.201`` / ``.4.202`` / ``.4.203``      :func:`decode_htj2k` (``neuronova_lib.htj2k``)
anything else pydicom knows (JPEG, JPEG-LS,     :func:`decode_with_pydicom`
JPEG 2000, RLE)
==============================================  =========================================

Lengths are checked, never guessed: a part labelled uncompressed whose length
is not ``rows × columns × samples × bytes`` is an error that names the likely
cause (Debian's Orthanc 1.10 labels HTJ2K codestreams ``1.2.840.10008.1.2.1``).

The same functions decode frames read from local files
(:func:`neuronova_lib.volume.load_dicom_files`), so a local load and a
DICOMweb load share one code path.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

# Transfer syntax constants live in ``wado`` (light to import); HTJ2K ones are decoded
# by ``neuronova_lib.htj2k``, imported only when such a frame arrives.
from ..wado import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_SYNTAXES,
    IMPLICIT_VR_LITTLE_ENDIAN,
    split_outside_quotes,
)

logger = logging.getLogger(__name__)

DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
#: What a part of ``application/octet-stream`` is when it names no transfer syntax
#: (PS3.18 8.7.3.5.2: the default for uncompressed bulk data).
DEFAULT_FRAME_SYNTAX = EXPLICIT_VR_LITTLE_ENDIAN

_LITTLE_ENDIAN_NATIVE = frozenset(
    {IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}
)
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"  # JPEG 2000 codestream: SOC marker, then SIZ


class FrameDecodeError(ValueError):
    """A frame's bytes do not match its label or its metadata."""


class UnsupportedTransferSyntaxError(FrameDecodeError):
    """No decoder in the table (nor pydicom) handles this transfer syntax."""


class CodecUnavailableError(ImportError):
    """The decoder for this transfer syntax needs a package that is not installed."""


@dataclass(frozen=True)
class PixelFormat:
    """What one frame holds (the Image Pixel module of its instance).

    Parameters
    ----------
    rows, columns : int
    samples_per_pixel : int
    bits_allocated : int
        8, 16 or 32 (1-bit and float pixel data are not volumes this library builds).
    bits_stored : int
    pixel_representation : int
        0 unsigned, 1 two's complement.
    photometric_interpretation : str
    planar_configuration : int
    """

    rows: int
    columns: int
    samples_per_pixel: int = 1
    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0
    photometric_interpretation: str = "MONOCHROME2"
    planar_configuration: int = 0

    def __post_init__(self) -> None:
        if self.rows < 1 or self.columns < 1:
            raise FrameDecodeError(f"Rows and Columns must be positive, got {self.rows}×{self.columns}")
        if self.bits_allocated not in (8, 16, 32):
            raise FrameDecodeError(
                f"BitsAllocated {self.bits_allocated} is not supported (8, 16 or 32)"
            )
        if not 1 <= self.bits_stored <= self.bits_allocated:
            raise FrameDecodeError(
                f"BitsStored {self.bits_stored} must be between 1 and BitsAllocated "
                f"{self.bits_allocated}"
            )
        if self.pixel_representation not in (0, 1):
            raise FrameDecodeError(f"PixelRepresentation must be 0 or 1, got {self.pixel_representation}")

    @property
    def dtype(self) -> np.dtype:
        """Native-endian numpy type of one sample."""
        kind = "i" if self.pixel_representation else "u"
        return np.dtype(f"{kind}{self.bits_allocated // 8}")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one decoded frame: ``(rows, columns)``, or ``(rows, columns, samples)``."""
        if self.samples_per_pixel == 1:
            return (self.rows, self.columns)
        return (self.rows, self.columns, self.samples_per_pixel)

    @property
    def frame_bytes(self) -> int:
        """Length of one uncompressed frame."""
        return self.rows * self.columns * self.samples_per_pixel * (self.bits_allocated // 8)

    @classmethod
    def from_json(cls, instance: Mapping[str, Any]) -> PixelFormat:
        """Read it from one instance's DICOM JSON metadata (WADO-RS or ``Dataset.to_json_dict``)."""

        def need(tag: str, keyword: str) -> Any:
            value = _json_first(instance, tag)
            if value is None:
                raise FrameDecodeError(f"the metadata has no {keyword} ({tag[:4]},{tag[4:]})")
            return value

        return cls(
            rows=int(need("00280010", "Rows")),
            columns=int(need("00280011", "Columns")),
            samples_per_pixel=int(_json_first(instance, "00280002") or 1),
            bits_allocated=int(need("00280100", "BitsAllocated")),
            bits_stored=int(_json_first(instance, "00280101") or need("00280100", "BitsAllocated")),
            pixel_representation=int(_json_first(instance, "00280103") or 0),
            photometric_interpretation=str(_json_first(instance, "00280004") or "MONOCHROME2"),
            planar_configuration=int(_json_first(instance, "00280006") or 0),
        )


def common_pixel_format(instances: Sequence[Mapping[str, Any]]) -> PixelFormat:
    """The one :class:`PixelFormat` of a series' instances.

    Raises
    ------
    FrameDecodeError
        When instances differ (e.g. 8- and 16-bit images in one series) or
        hold colour (a volume is one sample per voxel).
    """
    if not instances:
        raise FrameDecodeError("no instances")
    first = PixelFormat.from_json(instances[0])
    for instance in instances[1:]:
        other = PixelFormat.from_json(instance)
        if other != first:
            raise FrameDecodeError(
                f"instances of one series differ in their pixel format: {first} vs {other}"
            )
    if first.samples_per_pixel != 1:
        raise FrameDecodeError(
            f"SamplesPerPixel {first.samples_per_pixel} ({first.photometric_interpretation}): "
            "colour images are not volumes; fetch them with client.dicomweb"
        )
    return first


def _json_first(instance: Mapping[str, Any], tag: str) -> Any:
    element = instance.get(tag)
    if not element:
        return None
    values = element.get("Value")
    return values[0] if values else None


# -- decoders -----------------------------------------------------------------

def _fix_stored_bits(array: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """Sign-extend or mask when BitsStored < BitsAllocated (no copy when nothing to fix)."""
    unused = fmt.bits_allocated - fmt.bits_stored
    if unused == 0:
        return array
    if fmt.pixel_representation:
        # Two's complement in the low BitsStored bits: shift up and back down.
        return (array << unused) >> unused
    mask = (1 << fmt.bits_stored) - 1
    if array.size and int(array.max()) > mask:  # high bits hold something else (overlays)
        return array & np.asarray(mask, dtype=array.dtype)
    return array


def _native_length_error(data: bytes | memoryview, fmt: PixelFormat, syntax: str) -> FrameDecodeError:
    message = (
        f"a frame labelled {syntax} (uncompressed) has {len(data)} bytes, but the metadata "
        f"({fmt.rows} rows × {fmt.columns} columns × {fmt.samples_per_pixel} sample(s) × "
        f"{fmt.bits_allocated // 8} byte(s)) needs {fmt.frame_bytes}."
    )
    if bytes(data[:4]) == _J2K_SOC_SIZ:
        message += (
            " The bytes start with a JPEG 2000 codestream (SOC, SIZ): the server most likely "
            "sent an HTJ2K or JPEG 2000 codestream under the uncompressed label, as Debian's "
            "Orthanc 1.10 does for HTJ2K (it labels them 1.2.840.10008.1.2.1). The platform "
            "must label frames correctly server-side; this client does not guess a codec."
        )
    else:
        message += " The metadata (Rows, Columns, BitsAllocated, SamplesPerPixel) and the pixel data disagree."
    return FrameDecodeError(message)


def decode_native(data: bytes | memoryview, fmt: PixelFormat, syntax: str) -> np.ndarray:
    """Uncompressed frame → array of :attr:`PixelFormat.shape` (a read-only view when possible)."""
    expected = fmt.frame_bytes
    # An odd-length frame may carry the one pad byte that keeps DICOM values even.
    if len(data) != expected and not (expected % 2 == 1 and len(data) == expected + 1):
        raise _native_length_error(data, fmt, syntax)
    dtype = fmt.dtype
    if syntax == EXPLICIT_VR_BIG_ENDIAN:
        dtype = dtype.newbyteorder(">")
    count = fmt.rows * fmt.columns * fmt.samples_per_pixel
    array = np.frombuffer(data, dtype=dtype, count=count)
    if dtype.byteorder == ">":
        array = array.astype(fmt.dtype)
    if fmt.samples_per_pixel > 1 and fmt.planar_configuration == 1:
        array = array.reshape(fmt.samples_per_pixel, fmt.rows, fmt.columns).transpose(1, 2, 0)
    else:
        array = array.reshape(fmt.shape)
    return _fix_stored_bits(array, fmt)


def _checked_decoded(array: np.ndarray, fmt: PixelFormat, syntax: str, codec: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] == 1 and fmt.samples_per_pixel == 1:
        array = array[..., 0]
    if array.shape != fmt.shape:
        raise FrameDecodeError(
            f"{codec} decoded a {syntax} frame to shape {array.shape}, but the metadata says "
            f"{fmt.shape} (Rows, Columns, SamplesPerPixel)"
        )
    if array.dtype != fmt.dtype:
        info = np.iinfo(fmt.dtype)
        if array.dtype.kind not in "iu" or (
            array.size and (int(array.min()) < info.min or int(array.max()) > info.max)
        ):
            raise FrameDecodeError(
                f"{codec} decoded a {syntax} frame to {array.dtype} values that do not fit "
                f"the metadata's {fmt.dtype} (BitsAllocated {fmt.bits_allocated}, "
                f"PixelRepresentation {fmt.pixel_representation})"
            )
        array = array.astype(fmt.dtype)
    return array


def decode_htj2k(data: bytes | memoryview, fmt: PixelFormat, syntax: str) -> np.ndarray:
    """HTJ2K codestream → array, with the platform's codec (imported only when needed)."""
    try:
        htj2k = importlib.import_module("neuronova_lib.htj2k")
    except ImportError as exc:
        raise CodecUnavailableError(
            f"frames in {syntax} (HTJ2K) need neuronova_lib.htj2k, the platform's HTJ2K codec, "
            f"and it cannot be imported here ({exc}); install a NeuroNova version that has it "
            "(with its codec dependencies, e.g. imagecodecs)"
        ) from exc
    if bytes(data[:4]) != _J2K_SOC_SIZ:
        raise FrameDecodeError(
            f"a frame labelled {syntax} (HTJ2K) does not start with a JPEG 2000 codestream "
            f"(first bytes {bytes(data[:4]).hex()}); it is mislabelled or truncated"
        )
    return _checked_decoded(np.asarray(htj2k.decode(bytes(data))), fmt, syntax, "neuronova_lib.htj2k")


#: Most in-plane resolution levels a reduced load skips: the platform encoder's wavelet
#: levels (:data:`neuronova_lib.htj2k.codec.DECOMPOSITIONS`), 1/32 of the rows and columns.
MAX_REDUCE = 5


def decode_reduced(data: bytes | memoryview, transfer_syntax: str, fmt: PixelFormat,
                   reduce: int) -> np.ndarray:
    """One frame ``reduce`` resolution levels below full: rows and columns ``ceil(n / 2**reduce)``.

    A codestream the server already cut to that resolution (``?reduce=``, where the
    codestream allows it: :func:`neuronova_lib.htj2k.codestream.reduce_resolution`) is
    decoded as it is.

    An HTJ2K codestream is decoded at that level, so only its lower resolutions are
    decoded (the point: a first image at a fraction of the work). Other syntaxes, and a
    codestream with fewer wavelet levels than asked, are decoded in full and subsampled
    at every ``2**reduce``-th pixel, where JPEG 2000's reduced samples sit as well; so is
    a codestream whose precision fills its output type (16 of 16 bits), whose reduced
    decode cannot be told from wrapped values (:func:`neuronova_lib.htj2k.codec.has_headroom`).
    """
    if reduce == 0:
        return decode_frame(data, transfer_syntax, fmt)
    step = 1 << reduce
    small = replace(fmt, rows=-(-fmt.rows // step), columns=-(-fmt.columns // step))
    if transfer_syntax in HTJ2K_SYNTAXES and bytes(data[:4]) == _J2K_SOC_SIZ:
        htj2k = importlib.import_module("neuronova_lib.htj2k")
        info = htj2k.codestream_info(bytes(data))
        if info.reduced == reduce:  # the server cut it to that resolution (``?reduce=``)
            return _checked_decoded(np.asarray(htj2k.decode(bytes(data))), small,
                                    transfer_syntax, "neuronova_lib.htj2k")
        if info.reduced:
            raise FrameDecodeError(f"asked for a frame {reduce} level(s) down, got one "
                                   f"{info.reduced} down")
        if reduce <= info.decompositions and htj2k.codec.has_headroom(info):
            return _checked_decoded(np.asarray(htj2k.decode(bytes(data), reduce=reduce)), small,
                                    transfer_syntax, "neuronova_lib.htj2k")
    return decode_frame(data, transfer_syntax, fmt)[::step, ::step]


def decode_with_pydicom(data: bytes | memoryview, fmt: PixelFormat, syntax: str) -> np.ndarray:
    """Any other transfer syntax pydicom has a decoder for (JPEG, JPEG-LS, JPEG 2000, RLE)."""
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    try:
        decoder = get_decoder(UID(syntax))
    except NotImplementedError:
        raise UnsupportedTransferSyntaxError(
            f"no decoder for transfer syntax {syntax!r} (neither in NeuroNova's table nor in pydicom)"
        ) from None
    if not decoder.is_available:
        missing = "; ".join(str(m) for m in getattr(decoder, "missing_dependencies", []))
        raise CodecUnavailableError(
            f"pydicom can decode {syntax} only with one of these packages: {missing or '?'} "
            "(e.g. pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle)"
        )
    options: dict[str, Any] = {
        "rows": fmt.rows,
        "columns": fmt.columns,
        "samples_per_pixel": fmt.samples_per_pixel,
        "bits_allocated": fmt.bits_allocated,
        "bits_stored": fmt.bits_stored,
        "pixel_representation": fmt.pixel_representation,
        "photometric_interpretation": fmt.photometric_interpretation,
        "number_of_frames": 1,
    }
    if fmt.samples_per_pixel > 1:
        options["planar_configuration"] = fmt.planar_configuration
    try:
        array, _ = decoder.as_array(encapsulate([bytes(data)]), index=0, **options)
    except (ValueError, RuntimeError) as exc:
        raise FrameDecodeError(f"pydicom could not decode a {syntax} frame: {exc}") from exc
    return _checked_decoded(array, fmt, syntax, "pydicom")


FrameDecoder = Callable[[bytes | memoryview, PixelFormat, str], np.ndarray]

#: Transfer syntax UID → decoder; anything not listed goes to :func:`decode_with_pydicom`.
DECODERS: dict[str, FrameDecoder] = {
    **{uid: decode_native for uid in _LITTLE_ENDIAN_NATIVE},
    EXPLICIT_VR_BIG_ENDIAN: decode_native,
    **{uid: decode_htj2k for uid in sorted(HTJ2K_SYNTAXES)},
}


def decode_frame(data: bytes | memoryview, transfer_syntax: str, fmt: PixelFormat) -> np.ndarray:
    """Decode one frame with the decoder the table names for its transfer syntax.

    Parameters
    ----------
    data : bytes
        The frame as served (a WADO-RS part) or stored (one frame of Pixel Data).
    transfer_syntax : str
        The label that came with the bytes.
    fmt : PixelFormat
        What the metadata says the frame holds.

    Returns
    -------
    numpy.ndarray
        ``fmt.shape``, ``fmt.dtype``; may be a read-only view on ``data``.

    Raises
    ------
    FrameDecodeError
        Length, shape or type disagree with the metadata (the message names the likely cause).
    CodecUnavailableError
        The codec for this syntax is not installed.
    """
    decoder = DECODERS.get(transfer_syntax, decode_with_pydicom)
    return decoder(data, fmt, transfer_syntax)


# -- multipart/related ---------------------------------------------------------

def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``'a/b; k=v; q="x; y"'`` → ``('a/b', {'k': 'v', 'q': 'x; y'})`` (keys lower-cased).

    Quotes are honoured, so Orthanc's ``type="application/octet-stream;
    transfer-syntax=…"`` stays one parameter.
    """
    items = split_outside_quotes(value, ";") or [""]
    media_type = items[0].strip().lower()
    params: dict[str, str] = {}
    for item in items[1:]:
        key, sep, val = item.partition("=")
        if sep:
            params[key.strip().lower()] = val.strip().strip('"')
    return media_type, params


@dataclass(frozen=True)
class Part:
    """One body part of a multipart/related answer."""

    headers: Mapping[str, str]
    content: bytes

    @property
    def transfer_syntax(self) -> str | None:
        """The ``transfer-syntax`` parameter of the part's Content-Type, if any."""
        _, params = parse_media_type(self.headers.get("content-type", ""))
        return params.get("transfer-syntax")


def response_transfer_syntax(content_type: str) -> str | None:
    """The transfer syntax a multipart answer declares for all its parts, if it does.

    Orthanc puts it inside the quoted ``type`` parameter:
    ``multipart/related; type="application/octet-stream; transfer-syntax=…"``.
    """
    _, params = parse_media_type(content_type)
    if "transfer-syntax" in params:
        return params["transfer-syntax"]
    _, inner = parse_media_type(params.get("type", ""))
    return inner.get("transfer-syntax")


def split_multipart(content_type: str, body: bytes) -> list[Part]:
    """Split a ``multipart/related`` body into parts, keeping each part's headers.

    dicomweb-client's own parser drops the part headers, and with them the
    ``transfer-syntax`` label each frame is decoded by; hence this one.

    Raises
    ------
    FrameDecodeError
        Not multipart, no boundary, a part without a header block, or a part
        whose Content-Length disagrees with its body.
    """
    media_type, params = parse_media_type(content_type)
    if media_type != "multipart/related":
        if media_type in ("application/octet-stream", ""):
            return [Part({"content-type": content_type}, body)]  # a single-part answer
        raise FrameDecodeError(f"expected multipart/related frames, got {content_type!r}")
    boundary = params.get("boundary")
    if not boundary:
        raise FrameDecodeError(f"multipart answer without a boundary: {content_type!r}")
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise FrameDecodeError("multipart body does not contain its boundary")
    parts: list[Part] = []
    for chunk in body[start + len(delimiter):].split(b"\r\n" + delimiter):
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        header_end = chunk.find(b"\r\n\r\n")
        if header_end < 0:
            raise FrameDecodeError("a multipart part has no header block (CRLF CRLF)")
        headers: dict[str, str] = {}
        for line in chunk[:header_end].decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        content = chunk[header_end + 4:]
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) != len(content):
            raise FrameDecodeError(
                f"a multipart part declares Content-Length {length} but holds {len(content)} bytes"
            )
        parts.append(Part(headers, content))
    return parts
