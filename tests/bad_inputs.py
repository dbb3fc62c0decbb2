"""Bad DICOM inputs (the FINDINGS "Bad input" classes) and good ones, built from pydicom's test files.

Shared by the gate's unit tests and the end-to-end tests of every way in
(STOW-RS, the upload route, bulk transcoding).
"""

from __future__ import annotations

import copy
import io

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from neuronova_lib.transcode import transcode_to_htj2k


def _read(name: str) -> Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def dicom_bytes(ds: Dataset, *, implicit: bool = False) -> bytes:
    buf = io.BytesIO()
    if implicit:
        ds = copy.deepcopy(ds)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def raw_bytes(ds: Dataset) -> bytes:
    """Write as is: no checks of the pixel data against the transfer syntax."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=False, little_endian=True, implicit_vr=False)
    data = buf.getvalue()
    assert data[128:132] == b"DICM"
    return data


def with_syntax(ds: Dataset, syntax: str) -> bytes:
    """``ds`` encoded explicit VR little endian, but with ``syntax`` in its file meta."""
    from pydicom.filewriter import write_file_meta_info

    data = raw_bytes(ds)  # explicit VR LE body, pixel data as the dataset holds them
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    meta = copy.deepcopy(ds.file_meta)
    meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    write_file_meta_info(buf, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + buf.getvalue() + data[meta_end:]


def mr() -> Dataset:
    return _read("MR_small.dcm")


def mr_htj2k() -> Dataset:
    return transcode_to_htj2k(mr())


def nested(depth: int, pad_to: int = 10_000) -> bytes:
    """MR_small with ``depth`` nested sequences and padding to about ``pad_to`` bytes."""
    ds = mr()
    inner = Dataset()
    inner.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    inner.ReferencedSOPInstanceUID = "1.2.3.4"
    for _ in range(depth - 1):
        outer = Dataset()
        outer.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        outer.ReferencedImageSequence = Sequence([inner])
        inner = outer
    ds.ReferencedImageSequence = Sequence([inner])
    size = len(dicom_bytes(ds))
    if size < pad_to:
        ds.ImageComments = "x" * (pad_to - size - 8 + ((pad_to - size) & 1))
    return dicom_bytes(ds)


def bad_inputs() -> dict[str, tuple[bytes, str]]:
    """FINDINGS "Bad input" classes: name -> (bytes, reason expected)."""
    cases: dict[str, tuple[bytes, str]] = {}

    ds = mr()
    ds.Rows = ds.Columns = 65535
    cases["claims_65535x65535"] = (dicom_bytes(ds), "image_too_large")

    ds = mr()
    ds.BitsAllocated = 0
    cases["bits_allocated_0"] = (raw_bytes(ds), "bad_bits")

    ds = mr()
    ds.PixelData = ds.PixelData + b"\x00" * 2048
    cases["pixel_data_longer"] = (dicom_bytes(ds), "pixel_length_mismatch")

    cases["native_pixels_jpeg_syntax"] = (
        with_syntax(mr(), pydicom.uid.JPEGBaseline8Bit), "syntax_mismatch")
    cases["encapsulated_pixels_native_syntax"] = (
        with_syntax(mr_htj2k(), pydicom.uid.ExplicitVRLittleEndian), "syntax_mismatch")

    ds = mr_htj2k()
    cases["htj2k_header_flipped"] = (_flip_codestream(ds, header=True), "codestream_invalid")
    cases["htj2k_all_flipped"] = (_flip_codestream(ds, header=False), "codestream_invalid")

    ds = mr()
    ds.PhotometricInterpretation = "YBR_FULL"
    cases["ybr_one_sample"] = (dicom_bytes(ds), "photometric_mismatch")

    cases["nested_48"] = (nested(48), "nesting_too_deep")
    return cases


def _flip_codestream(ds: Dataset, *, header: bool) -> bytes:
    from pydicom.encaps import encapsulate, generate_frames

    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    if header:
        # SIZ: Xsiz/Ysiz at bytes 8..15 of the codestream (after SOC, SIZ marker, Lsiz, Rsiz).
        for i in range(8, 16):
            frame[i] ^= 0x5A
    else:
        for i in range(len(frame)):
            frame[i] ^= 0xFF
    ds = copy.deepcopy(ds)
    ds.PixelData = encapsulate([bytes(frame)], has_bot=True)
    return dicom_bytes(ds)


def good_mr(index: int = 0) -> bytes:
    """MR_small with fresh Study/Series/SOP UIDs (a new instance each call)."""
    ds = mr()
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.InstanceNumber = index + 1
    return dicom_bytes(ds)
