"""Transcoding to HTJ2K lossless: exact pixels, unchanged attributes and UIDs, encapsulation,
refusals with reasons, atomic files, and validation by dicom3tools and OpenJPH's tools."""

from __future__ import annotations

import copy
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from external_tools import ojph_expand, tool
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames, parse_basic_offsets
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, JPEG2000Lossless

import neuronova_lib.transcode as transcode_module
from neuronova_lib.demo import SMALL_SHAPE, SMALL_SPACING, write_demo_cases
from neuronova_lib.htj2k import (
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    HTJ2K_LOSSY,
    HTJ2K_SYNTAXES,
    codestream_info,
)
from neuronova_lib.transcode import (
    Reason,
    TranscodeError,
    TranscodeResult,
    transcode_file,
    transcode_to_htj2k,
)

# pydicom's bundled files that this transcoder must take, by what they exercise.
ACCEPTED = {
    "CT_small.dcm": "signed 16-bit CT, explicit little endian",
    "MR_small.dcm": "signed MR",
    "MR_small_implicit.dcm": "implicit VR source",
    "MR_small_bigendian.dcm": "big endian source",
    "MR_small_RLE.dcm": "RLE Lossless source",
    "MR_small_jp2klossless.dcm": "JPEG 2000 lossless source",
    "MR_small_jpeg_ls_lossless.dcm": "JPEG-LS lossless source (pyjpegls)",
    "image_dfl.dcm": "8-bit, deflated source",
    "examples_overlay.dcm": "12-bit unsigned MR, 484x300",
    "J2K_pixelrep_mismatch.dcm": "13-bit signed CT whose J2K sign disagrees with the dataset",
}


def _testdata(name: str) -> Path:
    """A file bundled with pydicom's wheel (never downloaded)."""
    path = get_testdata_file(name)
    assert isinstance(path, str), f"pydicom does not bundle {name}"
    return Path(path)


@pytest.fixture(scope="module")
def demo_slices(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A few slices of one small synthetic demo case (uint16, Bits Stored 12)."""
    root = tmp_path_factory.mktemp("demo")
    case = write_demo_cases(root, cases=1, seed=0, shape=SMALL_SHAPE, spacing=SMALL_SPACING)[0]
    files = sorted(case.dicom_dirs["t1c"].glob("*.dcm")) + sorted(
        case.dicom_dirs["flair"].glob("*.dcm")
    )
    assert files, "the demo writer produced no DICOM files"
    return [files[0], files[len(files) // 4], files[len(files) // 2 + 20]]


def _elements_except_pixels(ds: pydicom.Dataset) -> dict[int, object]:
    return {int(e.tag): e.value for e in ds if e.keyword != "PixelData"}


# ---------------------------------------------------------------- the dataset level


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_pydicom_files_transcode_exactly(name: str) -> None:
    ds = pydicom.dcmread(_testdata(name))
    before = copy.deepcopy(ds)
    original = ds.pixel_array.copy()
    out = transcode_to_htj2k(ds)
    assert out is not ds
    assert out.file_meta.TransferSyntaxUID == HTJ2K_LOSSLESS
    np.testing.assert_array_equal(out.pixel_array, original)
    # the input is untouched: same syntax, same bytes, same elements
    assert ds.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
    assert ds.PixelData == before.PixelData
    assert _elements_except_pixels(ds) == _elements_except_pixels(before)


def test_attributes_uids_and_flags_are_kept(demo_slices: list[Path]) -> None:
    ds = pydicom.dcmread(demo_slices[1])
    out = transcode_to_htj2k(ds)
    assert _elements_except_pixels(out) == _elements_except_pixels(ds)
    for keyword in (
        "SOPInstanceUID",
        "SOPClassUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "FrameOfReferenceUID",
    ):
        assert out[keyword].value == ds[keyword].value
    meta_in, meta_out = ds.file_meta, out.file_meta
    assert meta_out.MediaStorageSOPInstanceUID == meta_in.MediaStorageSOPInstanceUID
    assert meta_out.MediaStorageSOPClassUID == meta_in.MediaStorageSOPClassUID
    assert meta_out.ImplementationClassUID == PYDICOM_IMPLEMENTATION_UID  # who wrote it
    # lossless: the demo's "00" stays, and no lossy ratio or method appears
    assert out.LossyImageCompression == "00"
    assert "LossyImageCompressionRatio" not in out and "LossyImageCompressionMethod" not in out
    elem = out["PixelData"]
    assert elem.VR == "OB" and elem.is_undefined_length


def test_lossy_history_of_a_lossy_source_is_kept() -> None:
    ds = pydicom.dcmread(_testdata("693_J2KI.dcm"))  # J2K irreversible CT
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = "10"
    out = transcode_to_htj2k(ds)
    assert out.LossyImageCompression == "01" and out.LossyImageCompressionRatio == "10"
    np.testing.assert_array_equal(out.pixel_array, ds.pixel_array)


def _multiframe_from(slices: list[Path]) -> pydicom.Dataset:
    """A multi-frame MR built from demo slices (same grid, Bits Stored 12)."""
    first = pydicom.dcmread(slices[0])
    stack = np.stack([pydicom.dcmread(p).pixel_array for p in slices] * 3)
    first.NumberOfFrames = len(stack)
    first.PixelData = stack.tobytes()
    return first


@pytest.mark.parametrize("syntax", HTJ2K_SYNTAXES)
def test_multiframe_has_a_basic_offset_table(demo_slices: list[Path], syntax: str) -> None:
    ds = _multiframe_from(demo_slices)
    frames = ds.pixel_array.copy()
    out = transcode_to_htj2k(ds, syntax=syntax)
    assert out.file_meta.TransferSyntaxUID == syntax
    offsets = parse_basic_offsets(out.PixelData)
    fragments = list(generate_frames(out.PixelData, number_of_frames=len(frames)))
    assert len(offsets) == len(fragments) == len(frames)
    assert offsets[0] == 0
    for i, fragment in enumerate(fragments):
        info = codestream_info(fragment)
        assert info.precision == 12 and not info.is_signed and info.reversible
        if i:  # each offset points at its fragment's item tag
            assert offsets[i] == offsets[i - 1] + 8 + len(fragments[i - 1])
    if syntax == HTJ2K_LOSSLESS_RPCL:
        assert codestream_info(fragments[0]).has_tlm
    np.testing.assert_array_equal(out.pixel_array, frames)


def test_lossy_syntax_is_still_coded_losslessly(demo_slices: list[Path]) -> None:
    ds = pydicom.dcmread(demo_slices[2])
    out = transcode_to_htj2k(ds, syntax=HTJ2K_LOSSY)
    np.testing.assert_array_equal(out.pixel_array, ds.pixel_array)
    assert out.LossyImageCompression == "00"


def test_monochrome1_unsigned_8_bit(demo_slices: list[Path]) -> None:
    ds = pydicom.dcmread(demo_slices[1])
    pixels = (ds.pixel_array >> 4).astype(np.uint8)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = pixels.tobytes()
    out = transcode_to_htj2k(ds)
    assert out.PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_array_equal(out.pixel_array, pixels)


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("examples_rgb_color.dcm", Reason.UNSUPPORTED_PHOTOMETRIC),
        ("examples_palette.dcm", Reason.UNSUPPORTED_PHOTOMETRIC),
        ("rtplan.dcm", Reason.NO_PIXEL_DATA),
        ("rtdose.dcm", Reason.UNSUPPORTED_PIXEL_FORMAT),
        ("liver_1frame.dcm", Reason.UNSUPPORTED_PIXEL_FORMAT),
        ("MR_truncated.dcm", Reason.TRUNCATED_PIXEL_DATA),
    ],
)
def test_refusals_name_their_reason(name: str, reason: Reason) -> None:
    ds = pydicom.dcmread(_testdata(name))
    with pytest.raises(TranscodeError) as caught:
        transcode_to_htj2k(ds)
    assert caught.value.reason is reason
    assert isinstance(caught.value, ValueError)
    assert reason.value in str(caught.value)


def test_already_htj2k_and_bad_target() -> None:
    ds = pydicom.dcmread(_testdata("MR_small.dcm"))
    out = transcode_to_htj2k(ds)
    with pytest.raises(TranscodeError) as caught:
        transcode_to_htj2k(out)
    assert caught.value.reason is Reason.ALREADY_HTJ2K
    with pytest.raises(TranscodeError) as caught:
        transcode_to_htj2k(ds, syntax=JPEG2000Lossless)
    assert caught.value.reason is Reason.UNSUPPORTED_TARGET_SYNTAX
    del ds.file_meta.TransferSyntaxUID
    with pytest.raises(TranscodeError) as caught:
        transcode_to_htj2k(ds)
    assert caught.value.reason is Reason.NO_TRANSFER_SYNTAX


def test_corrupt_compressed_source_is_a_decode_failure() -> None:
    # A frame whose codestream lost its headers: every JPEG 2000 decoder refuses it.
    # (OpenJPEG accepts a codestream whose tail is zeroed, so a tail cut would not do.)
    ds = pydicom.dcmread(_testdata("MR_small_jp2klossless.dcm"))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([b"\x00" * 64 + frame[64:]])
    with pytest.raises(TranscodeError) as caught:
        transcode_to_htj2k(ds)
    assert caught.value.reason is Reason.DECODE_FAILED


def test_a_wrong_codestream_is_caught_by_verification(
    demo_slices: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: an encoder that flips one pixel. The check must see it
    # and refuse, and the input must be left as it was.
    real_encode = transcode_module.encode

    def flipping_encode(frame: np.ndarray, **kwargs: object) -> bytes:
        bad = frame.copy()
        bad[3, 5] ^= 1
        return real_encode(bad, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(transcode_module, "encode", flipping_encode)
    ds = pydicom.dcmread(demo_slices[0])
    before = ds.PixelData
    with pytest.raises(TranscodeError) as caught:
        transcode_to_htj2k(ds)
    assert caught.value.reason is Reason.VERIFICATION_MISMATCH
    assert "(frame, row, column) (0, 3, 5)" in str(caught.value)
    assert ds.PixelData == before and ds.file_meta.TransferSyntaxUID != HTJ2K_LOSSLESS


# ---------------------------------------------------------------- files


def test_transcode_file_writes_atomically(demo_slices: list[Path], tmp_path: Path) -> None:
    dst = tmp_path / "out" / "slice.dcm"
    result = transcode_file(demo_slices[1], dst)
    assert isinstance(result, TranscodeResult)
    assert result.bytes_in == demo_slices[1].stat().st_size
    assert result.bytes_out == dst.stat().st_size and result.ratio > 1
    assert result.frames == 1 and result.dst_syntax == HTJ2K_LOSSLESS and result.seconds > 0
    assert list(dst.parent.iterdir()) == [dst]  # no temporary file left behind
    back = pydicom.dcmread(dst)
    assert back.file_meta.TransferSyntaxUID == HTJ2K_LOSSLESS
    np.testing.assert_array_equal(back.pixel_array, pydicom.dcmread(demo_slices[1]).pixel_array)


def test_failed_transcode_leaves_destination_alone(tmp_path: Path) -> None:
    dst = tmp_path / "existing.dcm"
    dst.write_bytes(b"previous content")
    with pytest.raises(TranscodeError) as caught:
        transcode_file(_testdata("MR_truncated.dcm"), dst)
    assert caught.value.reason is Reason.TRUNCATED_PIXEL_DATA
    assert dst.read_bytes() == b"previous content"
    assert list(tmp_path.iterdir()) == [dst]
    (tmp_path / "not.dcm").write_bytes(b"hello")
    with pytest.raises(TranscodeError) as caught:
        transcode_file(tmp_path / "not.dcm", tmp_path / "x.dcm")
    assert caught.value.reason is Reason.READ_FAILED


def test_in_place_transcode(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    shutil.copy(_testdata("CT_small.dcm"), path)
    original = pydicom.dcmread(path).pixel_array.copy()
    transcode_file(path, path)
    back = pydicom.dcmread(path)
    assert back.file_meta.TransferSyntaxUID == HTJ2K_LOSSLESS
    np.testing.assert_array_equal(back.pixel_array, original)


# ---------------------------------------------------------------- external validation


def _dciodvfy_errors(tool: str, path: Path) -> list[str]:
    done = subprocess.run(
        [tool, str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="module")
def transcoded(
    demo_slices: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[tuple[Path, Path]]]:
    out_dir = tmp_path_factory.mktemp("htj2k")
    sources = [
        *demo_slices,
        Path(_testdata("CT_small.dcm")),
        Path(_testdata("MR_small_RLE.dcm")),
    ]
    pairs = []
    for i, src in enumerate(sources):
        dst = out_dir / f"{i}.dcm"
        transcode_file(src, dst)
        pairs.append((src, dst))
    yield pairs


@pytest.mark.e2e  # starts processes
def test_dciodvfy_accepts_the_output(transcoded: list[tuple[Path, Path]], tmp_path: Path) -> None:
    # dciodvfy predates the HTJ2K UIDs, so it reads our file as unknown
    # encapsulated syntax and stops. A copy relabelled JPEG 2000 lossless has
    # the same encapsulation and IOD; it must have no error the source lacks.
    dciodvfy = tool("dciodvfy", "dicom3tools")
    for src, dst in transcoded:
        relabelled = tmp_path / f"{dst.stem}-as-j2k.dcm"
        ds = pydicom.dcmread(dst)
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.save_as(relabelled, enforce_file_format=True)
        new_errors = set(_dciodvfy_errors(dciodvfy, relabelled)) - set(_dciodvfy_errors(dciodvfy, src))
        assert not new_errors, f"{src.name}: {sorted(new_errors)}"
        # and on the HTJ2K file itself it fails only for the syntax it does not know
        assert any("Undefined value length" in e for e in _dciodvfy_errors(dciodvfy, dst))


@pytest.mark.e2e  # starts processes
def test_ojph_expand_decodes_every_frame(
    transcoded: list[tuple[Path, Path]], tmp_path: Path
) -> None:
    for src, dst in transcoded:
        ds = pydicom.dcmread(dst)
        expected = pydicom.dcmread(src).pixel_array
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        out = ojph_expand(frame, expected.dtype, expected.shape, tmp_path)
        # ojph_expand writes negative samples as 0: compare signed data clipped
        np.testing.assert_array_equal(out, np.clip(expected, 0, None))


def test_written_files_read_back_with_pydicom_only(transcoded: list[tuple[Path, Path]]) -> None:
    for src, dst in transcoded:
        ds = pydicom.dcmread(dst)
        assert ds.file_meta.TransferSyntaxUID == HTJ2K_LOSSLESS
        # the first 4 bytes of the first fragment are the J2K SOC and SIZ markers
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        assert struct.unpack(">HH", frame[:4]) == (0xFF4F, 0xFF51)
        from pydicom.pixels.decoders.base import get_decoder

        theirs, _ = get_decoder(HTJ2K_LOSSLESS).as_array(ds, decoding_plugin="pylibjpeg")
        np.testing.assert_array_equal(theirs, pydicom.dcmread(src).pixel_array)
