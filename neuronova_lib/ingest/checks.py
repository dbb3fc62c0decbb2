"""Pure checks of one untrusted DICOM file: raw bytes first, then the parsed dataset.

Nothing a user sends may reach Orthanc unchecked (``shared/FINDINGS.md``, "Bad
input"): Debian's Orthanc stores absurd images and a ~10 KB file whose
sequences nest ~48 deep kills it. :func:`check_bytes` therefore

1. walks the raw element structure itself, iteratively and bounded (no
   recursion, no allocation proportional to a declared length), refusing deep
   nesting, too many elements and lengths that run past the bytes present —
   before any parser sees the file;
2. parses it with pydicom (now known to be shallow and consistent);
3. checks identity (SOP class allow-list, UIDs, Patient ID), the image pixel
   module (bits, photometric interpretation, size caps), the pixel data
   against the transfer syntax and the declared image, and decodes the first
   frame (every frame when configured) of a compressed image.

Each failure raises :class:`Refusal` with a stable ``reason`` code (a
:class:`neuronova_lib.reasons.Reason`). These functions hold no state and may run in any process;
:mod:`neuronova_lib.ingest.sandbox` runs them in a resource-limited worker.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from neuronova_lib.config import default
from neuronova_lib.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    HTJ2K_SYNTAXES,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_SYNTAXES,
    valid_uid,
)


#: Default allow-list: the common image storage classes, and RT Structure Set and the
#: structured reports (no pixels).
DEFAULT_SOP_CLASSES: frozenset[str] = frozenset({
    "1.2.840.10008.5.1.4.1.1.2",       # CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",     # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4",       # MR Image
    "1.2.840.10008.5.1.4.1.1.4.1",     # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.4.3",     # Enhanced MR Color Image
    "1.2.840.10008.5.1.4.1.1.7",       # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.1",     # Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2",     # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",     # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",     # Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.66.4",    # Segmentation
    "1.2.840.10008.5.1.4.1.1.128",     # PET Image
    "1.2.840.10008.5.1.4.1.1.130",     # Enhanced PET Image
    "1.2.840.10008.5.1.4.1.1.481.3",   # RT Structure Set (no pixel data)
    "1.2.840.10008.5.1.4.1.1.88.22",   # Enhanced SR (no pixel data)
    "1.2.840.10008.5.1.4.1.1.88.33",   # Comprehensive SR (no pixel data)
    "1.2.840.10008.5.1.4.1.1.88.34",   # Comprehensive 3D SR: TID 1500 reports (inference)
})
#: Allowed classes that carry no Pixel Data.
NON_IMAGE_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.88.22",
                                   "1.2.840.10008.5.1.4.1.1.88.33",
                                   "1.2.840.10008.5.1.4.1.1.88.34"})

_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})


class Refusal(Exception):  # noqa: N818 - it is a verdict, not a programming error
    """A file the gate refuses: ``reason`` is a :class:`~neuronova_lib.reasons.Reason` value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{message} [{reason}]")
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (Refusal, (self.reason, self.message))


@dataclass(frozen=True)
class Limits:
    """What the checks allow; :meth:`from_settings` reads the ``NEURONOVA_INGEST_*`` fields.

    The defaults are the settings' defaults (:func:`neuronova_lib.config.default`).
    """

    max_bytes: int = default("ingest_max_bytes")
    max_depth: int = default("ingest_max_depth")
    max_elements: int = default("ingest_max_elements")
    max_samples: int = default("ingest_max_samples")
    decode_all_frames: bool = default("ingest_decode_all_frames")
    sop_classes: frozenset[str] = DEFAULT_SOP_CLASSES

    @classmethod
    def from_settings(cls, settings: Any) -> "Limits":
        classes = settings.ingest_sop_classes
        return cls(
            max_bytes=settings.ingest_max_bytes,
            max_depth=settings.ingest_max_depth,
            max_elements=settings.ingest_max_elements,
            max_samples=settings.ingest_max_samples,
            decode_all_frames=settings.ingest_decode_all_frames,
            sop_classes=frozenset(classes) if classes is not None else DEFAULT_SOP_CLASSES,
        )


@dataclass
class RawScan:
    """What the raw walk found."""

    transfer_syntax: str
    max_depth: int = 0
    elements: int = 0
    pixel_vr: str | None = None
    pixel_length: int | None = None       # None: undefined length (encapsulated)
    bot_length: int = 0                   # Basic Offset Table item length
    fragments: list[int] = field(default_factory=list)  # fragment lengths, BOT excluded


@dataclass(frozen=True)
class Accepted:
    """What an accepted file is."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str
    patient_id: str
    frames: int


# --------------------------------------------------------------------------- raw walk


def _refuse(reason: str, message: str) -> Refusal:
    return Refusal(reason, message)


def check_preamble(data: bytes, limits: Limits) -> None:
    """Size cap and Part 10 framing."""
    if len(data) > limits.max_bytes:
        raise _refuse("too_large", f"{len(data)} bytes, the cap is {limits.max_bytes}")
    if len(data) >= 132 and data[128:132] == b"DICM":
        return
    head = data[:4]
    if head[:2] in (b"\x02\x00", b"\x08\x00") or data[:4] == b"DICM":
        raise _refuse("no_preamble", "DICOM data without the 128-byte preamble and 'DICM'")
    raise _refuse("not_dicom", "no 'DICM' prefix at byte 128: not a DICOM Part 10 file")


@dataclass
class _Frame:
    kind: str            # "sq" or "item"
    end: int | None      # absolute end offset, None for undefined length
    limit: int           # nearest enclosing defined end
    implicit: bool


def _is_sq_implicit(tag: int) -> bool:
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def _walk(
    buf: bytes, pos: int, *, implicit: bool, big: bool, limits: Limits, scan: RawScan,
    meta: bool = False,
) -> int:
    """Walk elements from ``pos``; return where the walk stopped (end, or end of group 2)."""
    end = len(buf)
    e = ">" if big else "<"
    u16 = struct.Struct(e + "H").unpack_from
    u32 = struct.Struct(e + "I").unpack_from
    stack: list[_Frame] = []
    depth = 0
    while True:
        while stack and stack[-1].end is not None and pos >= stack[-1].end:
            if pos > stack[-1].end:  # pragma: no cover - guarded when lengths are read
                raise _refuse("length_exceeds_data", "an element runs past its item")
            if stack.pop().kind == "sq":
                depth -= 1
        limit = stack[-1].limit if stack else end
        if pos >= end:
            if stack:
                raise _refuse("length_exceeds_data",
                              f"file ends inside {len(stack)} open sequences/items")
            return pos
        if pos + 8 > limit:
            raise _refuse("length_exceeds_data", f"element header at byte {pos} is truncated")
        group, elem = u16(buf, pos)[0], u16(buf, pos + 2)[0]
        tag = (group << 16) | elem
        if meta and not stack and group != 0x0002:
            return pos
        if group == 0xFFFE:
            length = u32(buf, pos + 4)[0]
            pos += 8
            top = stack[-1] if stack else None
            if elem == 0xE000:
                if top is None or top.kind != "sq":
                    raise _refuse("malformed", f"item tag outside a sequence at byte {pos - 8}")
                scan.elements += 1
                if length == _UNDEFINED:
                    stack.append(_Frame("item", None, top.limit, top.implicit))
                else:
                    if pos + length > top.limit:
                        raise _refuse("length_exceeds_data",
                                      f"item at byte {pos - 8} declares {length} bytes, "
                                      f"only {top.limit - pos} remain")
                    stack.append(_Frame("item", pos + length, pos + length, top.implicit))
            elif elem == 0xE00D:
                if top is None or top.kind != "item" or top.end is not None:
                    raise _refuse("malformed", f"stray item delimiter at byte {pos - 8}")
                stack.pop()
            elif elem == 0xE0DD:
                if top is None or top.kind != "sq" or top.end is not None:
                    raise _refuse("malformed", f"stray sequence delimiter at byte {pos - 8}")
                stack.pop()
                depth -= 1
            else:
                raise _refuse("malformed", f"unknown delimiter tag (FFFE,{elem:04X})")
            continue
        if stack and stack[-1].kind == "sq":
            raise _refuse("malformed", f"element ({group:04X},{elem:04X}) outside an item")
        implicit_here = stack[-1].implicit if stack else implicit
        if implicit_here:
            length = u32(buf, pos + 4)[0]
            vr = None
            pos += 8
            is_sq = length == _UNDEFINED or _is_sq_implicit(tag)
        else:
            vr = buf[pos + 4:pos + 6]
            if not (len(vr) == 2 and 65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                raise _refuse("malformed", f"invalid VR {vr!r} at byte {pos + 4}")
            if vr in _LONG_VRS:
                if pos + 12 > limit:
                    raise _refuse("length_exceeds_data", f"header at byte {pos} is truncated")
                length = u32(buf, pos + 8)[0]
                pos += 12
            else:
                length = u16(buf, pos + 6)[0]
                pos += 8
            # UN of undefined length, or UN of a tag the dictionary knows as SQ (pydicom and
            # DCMTK both parse those), is a sequence in implicit VR little endian (PS3.5 §6.2.2).
            is_sq = vr == b"SQ" or (vr == b"UN" and (length == _UNDEFINED
                                                    or _is_sq_implicit(tag)))
        scan.elements += 1
        if scan.elements > limits.max_elements:
            raise _refuse("too_many_elements", f"more than {limits.max_elements} elements")
        if tag == _PIXEL_DATA and not meta:
            top_level = not stack
            if top_level:
                scan.pixel_vr = vr.decode() if vr else None
                scan.pixel_length = None if length == _UNDEFINED else length
            if length == _UNDEFINED:  # encapsulated (an icon's too, inside an item)
                target = scan if top_level else RawScan(transfer_syntax="")
                pos = _walk_fragments(buf, pos, limit, u32, u16, target)
                continue
        if length == _UNDEFINED:
            if not is_sq:
                raise _refuse("malformed",
                              f"undefined length on non-sequence ({group:04X},{elem:04X})")
            depth += 1
            stack.append(_Frame("sq", None, limit, implicit_here or vr == b"UN"))
        else:
            if pos + length > limit:
                raise _refuse("length_exceeds_data",
                              f"({group:04X},{elem:04X}) declares {length} bytes, "
                              f"only {limit - pos} remain")
            if is_sq:
                depth += 1
                stack.append(_Frame("sq", pos + length, pos + length,
                                    implicit_here or vr == b"UN"))
            else:
                pos += length
        if depth > scan.max_depth:
            scan.max_depth = depth
        if depth > limits.max_depth:
            raise _refuse("nesting_too_deep",
                          f"sequences nest deeper than {limits.max_depth} levels")


def _walk_fragments(buf: bytes, pos: int, end: int, u32: Any, u16: Any, scan: RawScan) -> int:
    first = True
    while True:
        if pos + 8 > end:
            raise _refuse("length_exceeds_data", "file ends inside encapsulated pixel data")
        group, elem = u16(buf, pos)[0], u16(buf, pos + 2)[0]
        length = u32(buf, pos + 4)[0]
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            if first:
                raise _refuse("pixel_length_mismatch", "encapsulated pixel data without items")
            return pos
        if (group, elem) != (0xFFFE, 0xE000) or length == _UNDEFINED:
            raise _refuse("malformed", f"invalid pixel data fragment header at byte {pos - 8}")
        if pos + length > end:
            raise _refuse("length_exceeds_data",
                          f"pixel fragment declares {length} bytes, only {end - pos} remain")
        if first:
            scan.bot_length = length
            first = False
        else:
            scan.fragments.append(length)
            if len(scan.fragments) > 1_000_000:
                raise _refuse("too_many_elements", "more than 1,000,000 pixel fragments")
        pos += length


def scan_raw(data: bytes, limits: Limits) -> RawScan:
    """Check framing, size, nesting, element count and lengths without a parser."""
    check_preamble(data, limits)
    scan = RawScan(transfer_syntax="")
    meta_end = _walk(data, 132, implicit=False, big=False, limits=limits, scan=scan, meta=True)
    syntax = _meta_syntax(data, meta_end)
    scan.transfer_syntax = syntax
    body, start = data, meta_end
    if syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            body = inflater.decompress(data[meta_end:], limits.max_bytes)
        except zlib.error as exc:
            raise _refuse("malformed", f"deflated dataset does not inflate: {exc}") from None
        if inflater.unconsumed_tail:
            raise _refuse("too_large", f"deflated dataset inflates past {limits.max_bytes} bytes")
        start = 0
    _walk(body, start, implicit=syntax == IMPLICIT_VR_LITTLE_ENDIAN, big=syntax == EXPLICIT_VR_BIG_ENDIAN,
          limits=limits, scan=scan)
    return scan


def _meta_syntax(data: bytes, meta_end: int) -> str:
    pos = 132
    while pos + 8 <= meta_end:
        group, elem = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            length = struct.unpack_from("<I", data, pos + 8)[0]
            hdr = 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            hdr = 8
        if (group, elem) == (0x0002, 0x0010):
            value = data[pos + hdr:pos + hdr + length]
            syntax = value.rstrip(b"\x00 ").decode("ascii", "replace")
            if not valid_uid(syntax):
                raise _refuse("unsupported_syntax", f"transfer syntax {syntax!r} is not a UID")
            return syntax
        if length == _UNDEFINED:
            break
        pos += hdr + length
    raise _refuse("not_dicom", "file meta information has no Transfer Syntax UID")


# --------------------------------------------------------------------------- dataset checks


def _uid(ds: Any, keyword: str) -> str:
    value = ds.get(keyword)
    text = str(value) if value is not None else ""
    if not text:
        raise _refuse("bad_uid", f"{keyword} is missing")
    if not valid_uid(text):
        raise _refuse("bad_uid", f"{keyword} {text[:80]!r} is not a valid UID (<= 64 chars)")
    return text


def _int(ds: Any, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is not None:
            return default
        raise _refuse("missing_attribute", f"{keyword} is missing")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _refuse("missing_attribute", f"{keyword} {value!r} is not an integer") from None


def check_identity(ds: Any, limits: Limits) -> tuple[str, str, str, str, str]:
    """SOP class allow-list, instance/study/series UIDs and Patient ID."""
    sop_class = str(ds.get("SOPClassUID") or getattr(ds.file_meta, "MediaStorageSOPClassUID", ""))
    if sop_class not in limits.sop_classes:
        raise _refuse("sop_class_not_allowed", f"SOP Class {sop_class[:80]!r} is not accepted")
    sop = _uid(ds, "SOPInstanceUID")
    study = _uid(ds, "StudyInstanceUID")
    series = _uid(ds, "SeriesInstanceUID")
    patient = str(ds.get("PatientID") or "").strip()
    if not patient:
        raise _refuse("no_patient_id", "Patient ID is missing or empty")
    return sop_class, sop, study, series, patient


_THREE_SAMPLES = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT",
                            "YBR_RCT", "YBR_PARTIAL_422", "HSV", "ARGB", "CMYK"})


def check_pixel_module(ds: Any, scan: RawScan, limits: Limits) -> int:
    """Bits, photometric interpretation, size caps, lengths; return the frame count."""
    rows = _int(ds, "Rows")
    cols = _int(ds, "Columns")
    frames = _int(ds, "NumberOfFrames", 1)
    samples = _int(ds, "SamplesPerPixel")
    allocated = _int(ds, "BitsAllocated")
    stored = _int(ds, "BitsStored")
    high = _int(ds, "HighBit")
    if rows <= 0 or cols <= 0 or frames <= 0 or samples <= 0:
        raise _refuse("bad_dimensions", f"Rows {rows}, Columns {cols}, frames {frames}, "
                      f"samples {samples}: each must be positive")
    if allocated not in (1, 8, 16, 32, 64) or not (1 <= stored <= allocated) or high != stored - 1:
        raise _refuse("bad_bits", f"BitsAllocated {allocated}, BitsStored {stored}, "
                      f"HighBit {high}: need allocated in 1/8/16/32, 1 <= stored <= "
                      "allocated, high = stored - 1")
    if allocated == 64:
        raise _refuse("bad_bits", "BitsAllocated 64 is for float pixel data only")
    photometric = str(ds.get("PhotometricInterpretation") or "").strip()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if samples != 1:
            raise _refuse("photometric_mismatch", f"{photometric} needs 1 sample, not {samples}")
    elif photometric in _THREE_SAMPLES:
        if samples != 3:
            raise _refuse("photometric_mismatch", f"{photometric} needs 3 samples, not {samples}")
    elif photometric == "PALETTE COLOR":
        if samples != 1:
            raise _refuse("photometric_mismatch", f"PALETTE COLOR needs 1 sample, not {samples}")
        for colour in ("Red", "Green", "Blue"):
            if f"{colour}PaletteColorLookupTableDescriptor" not in ds or not (
                f"{colour}PaletteColorLookupTableData" in ds
                or f"Segmented{colour}PaletteColorLookupTableData" in ds
            ):
                raise _refuse("photometric_mismatch", f"PALETTE COLOR without the {colour} LUT")
    else:
        raise _refuse("photometric_mismatch", f"unknown photometric {photometric[:40]!r}")
    total = rows * cols * frames * samples
    if total > limits.max_samples:
        raise _refuse("image_too_large", f"{rows}x{cols}x{frames}x{samples} = {total} samples, "
                      f"the cap is {limits.max_samples}")

    syntax = scan.transfer_syntax
    native = syntax in NATIVE_SYNTAXES
    encapsulated = scan.pixel_length is None
    if native and encapsulated:
        raise _refuse("syntax_mismatch", f"native syntax {syntax} with encapsulated pixel data")
    if not native and not encapsulated:
        raise _refuse("syntax_mismatch",
                      f"compressed syntax {syntax} with native (defined-length) pixel data")
    if native:
        per_pixel = 2 if photometric == "YBR_FULL_422" else samples
        bits = rows * cols * frames * per_pixel * allocated
        expected = (bits + 7) // 8
        padded = expected + (expected & 1)
        if scan.pixel_length not in (expected, padded):
            raise _refuse("pixel_length_mismatch",
                          f"pixel data holds {scan.pixel_length} bytes, the image needs "
                          f"{expected} ({rows}x{cols}x{frames}x{per_pixel}x{allocated} bits)")
    else:
        count = len(scan.fragments)
        if count < frames:
            raise _refuse("pixel_length_mismatch",
                          f"{count} pixel fragments for {frames} frames")
        if sum(scan.fragments) == 0:
            raise _refuse("pixel_length_mismatch", "encapsulated pixel data is empty")
        if scan.bot_length and scan.bot_length != 4 * frames:
            raise _refuse("pixel_length_mismatch",
                          f"Basic Offset Table of {scan.bot_length} bytes for {frames} frames")
    return frames


def check_codestreams(ds: Any, scan: RawScan, frames: int, limits: Limits) -> None:
    """Decode the first frame (all when configured) of a compressed image."""
    if scan.pixel_length is not None:
        return
    rows, cols, samples = int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel)
    wanted = frames if limits.decode_all_frames else 1
    if scan.transfer_syntax in HTJ2K_SYNTAXES:
        from pydicom.encaps import generate_frames

        from neuronova_lib.htj2k import codestream_info, decode

        extended = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        try:
            for index, frame in enumerate(generate_frames(
                    ds.PixelData, number_of_frames=frames, extended_offsets=extended)):
                if index >= wanted:
                    break
                info = codestream_info(frame)
                if (info.rows, info.columns, info.components) != (rows, cols, samples):
                    raise _refuse("codestream_invalid",
                                  f"frame {index + 1} codestream is {info.rows}x{info.columns}"
                                  f"x{info.components}, the dataset says {rows}x{cols}x{samples}")
                if info.precision > int(ds.BitsAllocated):
                    raise _refuse("codestream_invalid",
                                  f"frame {index + 1} codestream has {info.precision} bits, "
                                  f"more than BitsAllocated {ds.BitsAllocated}")
                arr = decode(frame)
                if arr.shape[:2] != (rows, cols):
                    raise _refuse("codestream_invalid",
                                  f"frame {index + 1} decodes to {arr.shape}")
        except Refusal:
            raise
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a verdict
            raise _refuse("codestream_invalid",
                          f"HTJ2K frame does not decode: {type(exc).__name__}: {exc}") from None
        return
    from pydicom.pixels import get_decoder, pixel_array

    try:
        decoder = get_decoder(scan.transfer_syntax)
    except (NotImplementedError, ValueError) as exc:
        raise _refuse("unsupported_syntax", f"no decoder for {scan.transfer_syntax}: {exc}") \
            from None
    if not decoder.is_available:
        raise _refuse("unsupported_syntax", f"no decoder available for {scan.transfer_syntax}")
    try:
        for index in range(wanted):
            arr = pixel_array(ds, index=index)
            if arr.shape[:2] != (rows, cols):
                raise _refuse("codestream_invalid", f"frame {index + 1} decodes to {arr.shape}")
    except Refusal:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        text = str(exc)
        if "no pixel data plugins available" in text or "missing dependencies" in text:
            raise _refuse("unsupported_syntax", f"cannot decode {scan.transfer_syntax}: "
                          f"{text[:300]}") from None
        raise _refuse("codestream_invalid", f"frame does not decode: {type(exc).__name__}: "
                      f"{text[:300]}") from None


def parse(data: bytes) -> Any:
    """Parse bytes that passed :func:`scan_raw` with pydicom."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        # Force every element's value to be parsed now, so that bad values show here.
        for _ in _iter_all(ds.file_meta):
            pass
        for _ in _iter_all(ds):
            pass
    except InvalidDicomError as exc:
        raise _refuse("not_dicom", f"pydicom: {exc}") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure is a verdict
        raise _refuse("malformed", f"pydicom cannot read it: {type(exc).__name__}: "
                      f"{str(exc)[:300]}") from None
    return ds


def _iter_all(ds: Any) -> Iterable[Any]:
    """Every element at every level, iteratively (depth already bounded by the raw walk)."""
    pending = [ds]
    while pending:
        current = pending.pop()
        for elem in current:
            if elem.VR == "SQ":
                pending.extend(elem.value)
            yield elem


def check_bytes(data: bytes, limits: Limits | None = None) -> Accepted:
    """Run every check on one file; return what it is or raise :class:`Refusal`."""
    limits = limits or Limits()
    scan = scan_raw(data, limits)
    ds = parse(data)
    return check_dataset(ds, scan, limits)


def check_dataset(ds: Any, scan: RawScan, limits: Limits) -> Accepted:
    """The checks after parsing (identity, pixel module, codestreams)."""
    from pydicom.uid import UID

    if not UID(scan.transfer_syntax).is_transfer_syntax:
        raise _refuse("unsupported_syntax", f"unknown transfer syntax {scan.transfer_syntax}")
    sop_class, sop, study, series, patient = check_identity(ds, limits)
    if "PixelData" not in ds:
        if sop_class in NON_IMAGE_SOP_CLASSES:
            return Accepted(sop_class, sop, study, series, scan.transfer_syntax, patient, 0)
        raise _refuse("no_pixel_data", f"SOP Class {sop_class} needs Pixel Data")
    frames = check_pixel_module(ds, scan, limits)
    check_codestreams(ds, scan, frames, limits)
    return Accepted(sop_class, sop, study, series, scan.transfer_syntax, patient, frames)
