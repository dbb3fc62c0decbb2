"""Transcode a DICOM image to HTJ2K lossless, verified pixel for pixel before it is returned.

Modalities send classic transfer syntaxes (Orthanc here refuses HTJ2K over
DICOM, see ``shared/FINDINGS.md``), so the platform transcodes after receipt.
A transcoder that silently changed a pixel, a UID or a flag would corrupt the
archive, so this module:

* refuses with a :class:`TranscodeError` whose ``reason`` says why (already
  HTJ2K, no or truncated pixel data, colour, unsupported bit depth, decode
  failure, verification mismatch) — nothing half-done is returned;
* never modifies the dataset it is given: the result is a new dataset with
  the same attributes and UIDs, new file meta (transfer syntax and the
  writer's implementation identity, PS3.10 §7.1) and encapsulated pixel data
  with a Basic Offset Table; no Lossy Image Compression attribute is added
  (the coding is reversible) and any that the source carries stays, since it
  records the image's history;
* decodes its own output through pydicom, as any reader would, and compares
  it with the source's pixels before returning.

:func:`transcode_file` adds the file around it, written atomically.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.pixels import get_decoder
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from neuronova_lib.htj2k import (
    HTJ2K_LOSSLESS,
    HTJ2K_SYNTAXES,
    SYNTAX_NAMES,
    codestream_info,
    declared_precision,
    encode,
    register,
)
from neuronova_lib.reasons import Reason

logger = logging.getLogger(__name__)

_PIXEL_DATA = 0x7FE00010
_OFFSET_TABLES = ("ExtendedOffsetTable", "ExtendedOffsetTableLengths")
_BOT_LIMIT = 2**32 - 1  # a Basic Offset Table holds 32-bit offsets


class TranscodeError(ValueError):
    """A dataset that cannot be transcoded; ``reason`` is a :class:`Reason`.

    Attributes
    ----------
    reason : Reason
        A stable code for programs (counters, audit rows, retries).
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{message} [{reason.value}]")
        self.reason = reason


@dataclass(frozen=True)
class TranscodeResult:
    """What :func:`transcode_file` did.

    Attributes
    ----------
    src, dst : Path
        The files read and written.
    src_syntax, dst_syntax : str
        Transfer syntax UIDs before and after.
    frames : int
        Frames transcoded.
    bytes_in, bytes_out : int
        File sizes before and after.
    ratio : float
        ``bytes_in / bytes_out`` (whole files).
    seconds : float
        Wall time: read, transcode, verify and write.
    """

    src: Path
    dst: Path
    src_syntax: str
    dst_syntax: str
    frames: int
    bytes_in: int
    bytes_out: int
    ratio: float
    seconds: float


def transcode_to_htj2k(ds: Dataset, *, syntax: str = HTJ2K_LOSSLESS) -> Dataset:
    """Return a copy of ``ds`` whose pixel data are HTJ2K, coded losslessly and verified.

    Parameters
    ----------
    ds : pydicom.Dataset
        A monochrome image (MONOCHROME1/2, 8-16 bits stored, signed or not,
        one or more frames) in any transfer syntax pydicom can decode here,
        with its file meta (``ds.file_meta.TransferSyntaxUID``). Not modified.
    syntax : str
        :data:`~neuronova_lib.htj2k.HTJ2K_LOSSLESS` (default),
        :data:`~neuronova_lib.htj2k.HTJ2K_LOSSLESS_RPCL`, or
        :data:`~neuronova_lib.htj2k.HTJ2K_LOSSY` — which is coded reversibly
        here too: this function never loses information.

    Returns
    -------
    pydicom.Dataset
        A new dataset: same elements and UIDs, Transfer Syntax ``syntax``,
        Pixel Data encapsulated one fragment per frame with a Basic Offset
        Table (an Extended Offset Table beyond 4 GiB).

    Raises
    ------
    TranscodeError
        With ``reason`` telling why; the input is unchanged in every case.
    """
    register()  # the verification decodes through pydicom, with the platform's HTJ2K decoder
    if syntax not in HTJ2K_SYNTAXES:
        raise TranscodeError(
            Reason.UNSUPPORTED_TARGET_SYNTAX,
            f"{syntax!r} is not an HTJ2K transfer syntax; use one of {', '.join(HTJ2K_SYNTAXES)}",
        )
    source_syntax = _source_syntax(ds)
    _check_image(ds, source_syntax)
    started = time.perf_counter()
    frames = _decode_source(ds, source_syntax)
    bits_stored = int(ds.BitsStored)
    try:
        encoded = [encode(frame, syntax=syntax, bits_stored=bits_stored) for frame in frames]
    except ValueError as exc:
        raise TranscodeError(
            Reason.ENCODE_FAILED, f"cannot encode the pixel data as HTJ2K: {exc}"
        ) from exc
    out = _copy_without_pixels(ds)
    _set_pixel_data(out, encoded)
    out.file_meta.TransferSyntaxUID = UID(syntax)
    out.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    out.file_meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
    _verify(out, syntax, frames, encoded, ds)
    logger.debug(
        "transcoded %s from %s to %s: %d frame(s) in %.1f ms",
        ds.get("SOPInstanceUID", "?"),
        source_syntax,
        syntax,
        len(frames),
        1e3 * (time.perf_counter() - started),
    )
    return out


def transcode_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    syntax: str = HTJ2K_LOSSLESS,
) -> TranscodeResult:
    """Transcode the DICOM file ``src`` into ``dst``, written atomically.

    The output goes to a temporary file beside ``dst``, is flushed to disk,
    then renamed over ``dst``: a reader never sees half a file, and a failure
    leaves ``dst`` as it was. ``dst`` may be ``src``.

    Parameters
    ----------
    src, dst : path
        Source file; destination file (its folder is created if missing).
    syntax : str
        Target transfer syntax, as for :func:`transcode_to_htj2k`.

    Returns
    -------
    TranscodeResult

    Raises
    ------
    TranscodeError
        ``reason`` ``read_failed`` if ``src`` is not a readable DICOM file,
        otherwise as :func:`transcode_to_htj2k`.
    OSError
        If ``dst`` cannot be written.
    """
    started = time.perf_counter()
    src_path, dst_path = Path(src), Path(dst)
    try:
        ds = pydicom.dcmread(src_path)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise TranscodeError(Reason.READ_FAILED, f"cannot read {src_path} as DICOM: {exc}") from exc
    bytes_in = src_path.stat().st_size
    out = transcode_to_htj2k(ds, syntax=syntax)
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dst_path.parent, prefix=f".{dst_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            out.save_as(fh, enforce_file_format=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, dst_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    bytes_out = dst_path.stat().st_size
    return TranscodeResult(
        src=src_path,
        dst=dst_path,
        src_syntax=str(ds.file_meta.TransferSyntaxUID),
        dst_syntax=syntax,
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        ratio=bytes_in / bytes_out,
        seconds=time.perf_counter() - started,
    )


def _source_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax:
        raise TranscodeError(
            Reason.NO_TRANSFER_SYNTAX,
            "the dataset has no (0002,0010) Transfer Syntax UID in ds.file_meta, so its "
            "pixel data cannot be interpreted; read it with pydicom.dcmread from a Part 10 file",
        )
    if syntax in HTJ2K_SYNTAXES:
        raise TranscodeError(
            Reason.ALREADY_HTJ2K,
            f"the dataset is already {SYNTAX_NAMES[syntax]} ({syntax}); nothing to do",
        )
    return UID(syntax)


def _check_image(ds: Dataset, syntax: UID) -> None:
    """Refuse, before any work, what the encoder cannot take."""
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        hint = f" (it has {other[0]}, which HTJ2K cannot hold)" if other else ""
        raise TranscodeError(Reason.NO_PIXEL_DATA, f"the dataset has no Pixel Data{hint}")
    photometric = ds.get("PhotometricInterpretation")
    samples = ds.get("SamplesPerPixel", 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or samples != 1:
        what = (
            f"{photometric} with {samples} sample(s) per pixel"
            if photometric
            else ("without a Photometric Interpretation")
        )
        raise TranscodeError(
            Reason.UNSUPPORTED_PHOTOMETRIC,
            f"only MONOCHROME1/2 images with one sample per pixel are transcoded, this one is "
            f"{what}; keep it in its current syntax",
        )
    missing = [k for k in ("Rows", "Columns", "BitsAllocated", "BitsStored") if k not in ds]
    if missing:
        raise TranscodeError(
            Reason.UNSUPPORTED_PIXEL_FORMAT, f"the Image Pixel module lacks {', '.join(missing)}"
        )
    allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
    if allocated not in (8, 16) or not 1 <= stored <= min(allocated, 16):
        raise TranscodeError(
            Reason.UNSUPPORTED_PIXEL_FORMAT,
            f"Bits Allocated {allocated} / Bits Stored {stored} is not supported: HTJ2K "
            "transcoding here takes 8- or 16-bit allocation with 1-16 bits stored",
        )
    if not syntax.is_compressed:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = int(ds.Rows) * int(ds.Columns) * frames * allocated // 8
        actual = len(ds.PixelData)
        if actual < expected:
            raise TranscodeError(
                Reason.TRUNCATED_PIXEL_DATA,
                f"Pixel Data holds {actual} bytes but {ds.Rows}x{ds.Columns}x{frames} frames "
                f"of {allocated}-bit samples need {expected}; the file is incomplete",
            )


def _decode_source(ds: Dataset, syntax: UID) -> list[np.ndarray]:
    """The source's stored values, one 2-D array per frame (as pydicom decodes them)."""
    try:
        arr, _ = get_decoder(syntax).as_array(ds)
    except NotImplementedError as exc:
        raise TranscodeError(
            Reason.DECODE_FAILED, f"pydicom has no decoder for {syntax.name} ({syntax}): {exc}"
        ) from exc
    except Exception as exc:  # pydicom raises RuntimeError/ValueError/KeyError by plugin
        reason = Reason.DECODE_FAILED
        text = str(exc)
        if "fewer bytes" in text or "less than expected" in text or "truncat" in text.lower():
            reason = Reason.TRUNCATED_PIXEL_DATA
        raise TranscodeError(
            reason,
            f"cannot decode the source pixel data ({syntax.name}): {exc}; "
            "install the decoder pydicom names or check the file",
        ) from exc
    if arr.ndim == 2:
        return [arr]
    return list(arr)


def _copy_without_pixels(ds: Dataset) -> Dataset:
    """A deep copy of every element but Pixel Data and the source's offset tables."""
    out = Dataset()
    for elem in ds:
        if elem.tag == _PIXEL_DATA or elem.keyword in _OFFSET_TABLES:
            continue
        out.add(copy.deepcopy(elem))
    out.file_meta = FileMetaDataset(copy.deepcopy(ds.file_meta))
    out.preamble = getattr(ds, "preamble", None)
    return out


def _set_pixel_data(out: Dataset, encoded: list[bytes]) -> None:
    """Encapsulate one fragment per frame with a Basic (or Extended) Offset Table."""
    total = sum(len(f) + (len(f) & 1) + 8 for f in encoded[:-1])
    if total > _BOT_LIMIT:
        out.PixelData, out.ExtendedOffsetTable, out.ExtendedOffsetTableLengths = (
            encapsulate_extended(encoded)
        )
    else:
        out.PixelData = encapsulate(encoded, has_bot=True)
    elem = out["PixelData"]
    elem.VR = "OB"
    elem.is_undefined_length = True


def _verify(
    out: Dataset, syntax: str, frames: list[np.ndarray], encoded: list[bytes], ds: Dataset
) -> None:
    """Decode ``out`` as a reader would and require every pixel to match ``frames``."""
    stored, signed = int(ds.BitsStored), int(ds.get("PixelRepresentation", 0)) == 1
    for index, codestream in enumerate(encoded):
        info = codestream_info(codestream)
        if info.precision != declared_precision(stored) or info.is_signed != signed:
            raise TranscodeError(
                Reason.VERIFICATION_MISMATCH,
                f"frame {index}: the codestream declares {info.precision} bits, "
                f"signed={info.is_signed}; the dataset has {stored}, signed={signed}",
            )
    try:
        decoded, _ = get_decoder(syntax).as_array(out)
    except Exception as exc:
        raise TranscodeError(
            Reason.VERIFICATION_MISMATCH, f"the HTJ2K output does not decode: {exc}"
        ) from exc
    if decoded.ndim == 2:
        decoded = decoded[np.newaxis]
    original = np.stack(frames)
    if decoded.shape != original.shape:
        raise TranscodeError(
            Reason.VERIFICATION_MISMATCH,
            f"the HTJ2K output decodes to shape {decoded.shape}, the source to {original.shape}",
        )
    if not np.array_equal(decoded, original):
        differ = np.argwhere(decoded != original)
        first = tuple(int(i) for i in differ[0])
        raise TranscodeError(
            Reason.VERIFICATION_MISMATCH,
            f"{len(differ)} pixel(s) differ after decoding the HTJ2K output, first at "
            f"(frame, row, column) {first}: {original[first]} became {decoded[first]}",
        )
