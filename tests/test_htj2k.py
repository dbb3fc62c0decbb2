"""HTJ2K codec: round trips, declared precision, reduced resolution, refusals, backends,
pydicom registration, and decoding by OpenJPH's own command-line tool."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from external_tools import ojph_expand
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from neuronova_lib import htj2k
from neuronova_lib.htj2k import (
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    HTJ2K_LOSSY,
    HTJ2K_SYNTAXES,
    BackendUnavailableError,
    CodestreamError,
    DecodeError,
    UnsupportedImageError,
    backends,
    codestream,
    decode,
    encode,
    pydicom_plugin,
)

AVAILABLE_DECODERS = [b.NAME for b in backends.decoders()]

htj2k.register()  # the pydicom tests below use the plugins, as any caller must ask for them


def _testdata(name: str) -> Path:
    """A file bundled with pydicom's wheel (never downloaded)."""
    path = get_testdata_file(name)
    assert isinstance(path, str), f"pydicom does not bundle {name}"
    return Path(path)


def _mr_like(rows: int, columns: int, bits: int, signed: bool, seed: int = 0) -> np.ndarray:
    """A smooth image with noise and edges, filling most of ``bits``: like an MR/CT slice."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    smooth = np.sin(x / max(columns, 2) * 3.1) * np.cos(y / max(rows, 2) * 2.3)
    top = (1 << bits) - 1
    values = (smooth * 0.4 + 0.5) * top + rng.normal(0, top * 0.01, (rows, columns))
    values[rows // 3 : rows // 2, columns // 4 : columns // 2] = top  # a hard edge
    values = np.clip(np.rint(values), 0, top).astype(np.int64)
    values[0, 0], values[-1, -1] = 0, top  # the extremes of the range
    if signed:
        values -= 1 << (bits - 1)
    dtype = f"{'i' if signed else 'u'}{1 if bits <= 8 else 2}"
    return values.astype(dtype)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("bits", "signed"),
    [
        (8, False),
        (8, True),
        (12, False),
        (12, True),
        (16, False),
        (16, True),
        (10, False),
        (13, True),
        (2, False),
        (1, False),
        (9, True),
    ],
)
@pytest.mark.parametrize("shape", [(64, 64), (37, 53), (1, 1), (1, 9), (17, 1), (255, 257)])
def test_lossless_round_trip_with_every_decoder(
    bits: int, signed: bool, shape: tuple[int, int]
) -> None:
    frame = _mr_like(*shape, bits=bits, signed=signed)
    cs = encode(frame, bits_stored=bits)
    info = htj2k.codestream_info(cs)
    assert (info.rows, info.columns) == shape
    assert info.precision == htj2k.declared_precision(bits)
    assert info.is_signed == signed and info.reversible and info.is_htj2k
    for name in AVAILABLE_DECODERS:
        out = decode(cs, backend=name)
        assert out.dtype.kind == ("i" if signed else "u"), name
        np.testing.assert_array_equal(out, frame, err_msg=name)


def test_precision_is_bits_stored_and_extremes_survive() -> None:
    # The point of set_precision: 12-bit data are declared 12-bit (pydicom,
    # viewers and DICOM expect Bits Stored), yet 0 and 4095 decode exactly.
    frame = _mr_like(40, 40, 12, signed=False)
    cs = encode(frame, bits_stored=12)
    assert htj2k.codestream_info(cs).precision == 12
    assert htj2k.codestream_info(encode(frame)).precision == 16  # uint16 without bits_stored
    np.testing.assert_array_equal(decode(cs), frame)
    assert htj2k.declared_precision(1) == 2 and htj2k.declared_precision(9) == 10


@pytest.mark.parametrize("syntax", HTJ2K_SYNTAXES)
def test_each_syntax_has_its_codestream_options(syntax: str) -> None:
    frame = _mr_like(96, 80, 12, signed=False)
    info = htj2k.codestream_info(encode(frame, syntax=syntax, bits_stored=12))
    assert info.reversible  # lossless for 201/202, and for 203 without quality
    assert info.progression == "RPCL" and info.block_size == (64, 64)
    assert info.decompositions == htj2k.DECOMPOSITIONS
    if syntax == HTJ2K_LOSSLESS_RPCL:
        assert info.has_tlm and info.tile_parts == htj2k.DECOMPOSITIONS + 1
    else:
        assert not info.has_tlm and info.tile_parts == 1


def test_lossy_quality_trades_error_for_size() -> None:
    frame = _mr_like(128, 128, 12, signed=False)
    lossless = len(encode(frame, bits_stored=12))
    errors, sizes = [], []
    for quality in (50, 80, 100):
        cs = encode(frame, syntax=HTJ2K_LOSSY, quality=quality, bits_stored=12)
        assert not htj2k.codestream_info(cs).reversible
        out = decode(cs)
        assert out.dtype == np.uint16 and out.shape == frame.shape
        errors.append(int(np.abs(out.astype(np.int32) - frame).max()))
        sizes.append(len(cs))
    assert errors[0] > errors[1] > errors[2] >= 1, errors
    assert errors[2] <= 4  # quality 100: a step of one stored unit
    assert sizes[0] < sizes[1] < sizes[2] and sizes[1] < lossless, sizes


def test_signed_lossy_keeps_sign() -> None:
    frame = _mr_like(64, 64, 12, signed=True)
    out = decode(encode(frame, syntax=HTJ2K_LOSSY, quality=90, bits_stored=12))
    assert out.dtype == np.int16
    assert np.abs(out.astype(np.int32) - frame).max() <= 8


# ---------------------------------------------------------------- reduced resolution


@pytest.mark.parametrize("shape", [(240, 240), (512, 511), (37, 53)])
def test_reduced_resolution_sizes_and_content(shape: tuple[int, int]) -> None:
    frame = _mr_like(*shape, bits=12, signed=False)
    cs = encode(frame, syntax=HTJ2K_LOSSLESS_RPCL, bits_stored=12)
    for reduce in range(htj2k.DECOMPOSITIONS + 1):
        out = decode(cs, reduce=reduce)
        scale = 1 << reduce
        assert out.shape == (-(-shape[0] // scale), -(-shape[1] // scale))
    # One level down is the 5/3 low-pass image: close to a 2x2 average, not garbage.
    half = decode(cs, reduce=1).astype(np.float64)
    rows, cols = (shape[0] // 2) * 2, (shape[1] // 2) * 2
    mean = frame[:rows, :cols].reshape(rows // 2, 2, cols // 2, 2).mean(axis=(1, 3))
    assert np.median(np.abs(half[: rows // 2, : cols // 2] - mean)) < 0.02 * 4095


def test_reduced_resolution_next_to_a_sharp_edge_stays_in_range() -> None:
    """Brain beside the zero background: the lower resolutions overshoot below zero there,
    which the decoder wraps to the top of uint16; decode clamps it back (12 of 16 bits)."""
    frame = np.zeros((64, 64), np.uint16)
    frame[16:48, 16:48] = 2000
    frame[30:34, 30:34] = 4095
    cs = encode(frame, bits_stored=12)
    assert htj2k.codestream_info(cs).precision == 12
    for reduce in (1, 2, 3):
        out = decode(cs, reduce=reduce)
        assert int(out.max()) <= 4095, reduce
        # Wrapped values (near 65535) would multiply the mean; clamped ones keep it.
        assert abs(float(out.mean()) - float(frame.mean())) < 0.15 * float(frame.mean()), reduce


def test_reduce_out_of_range_and_backend_without_reduce() -> None:
    cs = encode(_mr_like(64, 64, 12, False), bits_stored=12)
    with pytest.raises(ValueError, match="reduce must be an integer from 0 to 5"):
        decode(cs, reduce=6)
    with pytest.raises(ValueError):
        decode(cs, reduce=-1)
    if "openjpeg" in AVAILABLE_DECODERS:
        with pytest.raises(BackendUnavailableError, match="cannot decode reduced"):
            decode(cs, reduce=1, backend="openjpeg")


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("frame", "kwargs", "match"),
    [
        (np.zeros((4, 4, 3), np.uint8), {}, "2-D monochrome frame"),
        (np.zeros((0, 4), np.uint16), {}, "empty"),
        (np.zeros((4, 4), np.float32), {}, "integer samples"),
        (np.zeros((4, 4), bool), {}, "integer samples"),
        (np.full((4, 4), 4096, np.uint16), {"bits_stored": 12}, "do not fit 12 unsigned"),
        (np.full((4, 4), -2049, np.int16), {"bits_stored": 12}, "do not fit 12 signed"),
        (np.zeros((4, 4), np.uint32), {}, "needs bits_stored"),
        (np.zeros((4, 4), np.uint32), {"bits_stored": 20}, "Bits Stored 20 is not supported"),
    ],
)
def test_encode_refuses_what_it_cannot_handle(
    frame: np.ndarray, kwargs: dict[str, int], match: str
) -> None:
    with pytest.raises(UnsupportedImageError, match=match):
        encode(frame, **kwargs)  # type: ignore[arg-type]


def test_encode_refuses_bad_syntax_and_quality() -> None:
    frame = np.zeros((8, 8), np.uint16)
    with pytest.raises(ValueError, match="not an HTJ2K transfer syntax"):
        encode(frame, syntax="1.2.840.10008.1.2.4.90")
    with pytest.raises(ValueError, match="lossless only"):
        encode(frame, syntax=HTJ2K_LOSSLESS, quality=80)
    for bad in (0, 101, float("nan")):
        with pytest.raises(ValueError, match="quality"):
            encode(frame, syntax=HTJ2K_LOSSY, quality=bad)
    with pytest.raises(TypeError, match="quality must be a number"):
        encode(frame, syntax=HTJ2K_LOSSY, quality="high")  # type: ignore[arg-type]


def test_int32_frame_with_bits_stored_is_accepted() -> None:
    frame = _mr_like(20, 30, 12, signed=True).astype(np.int32)
    np.testing.assert_array_equal(decode(encode(frame, bits_stored=12)), frame)


def test_decode_refuses_garbage_and_truncation() -> None:
    cs = encode(_mr_like(120, 100, 12, False), syntax=HTJ2K_LOSSLESS_RPCL, bits_stored=12)
    with pytest.raises(CodestreamError, match="SOC"):
        decode(b"\x00\x01" + cs)
    with pytest.raises(CodestreamError, match="truncated"):
        decode(cs[: len(cs) // 2])  # OpenJPH alone would decode this into garbage
    with pytest.raises(CodestreamError, match="EOC"):
        decode(cs[:-1])
    decode(cs + b"\x00")  # one DICOM pad byte is fine
    with pytest.raises(CodestreamError):
        codestream.parse(cs[:20])


def test_codestream_rewrite_limits() -> None:
    cs16 = encode(np.zeros((8, 8), np.uint16))
    with pytest.raises(CodestreamError, match="at most 6 bits"):
        codestream.set_precision(cs16, 8)
    with pytest.raises(CodestreamError):
        codestream.set_precision(cs16, 17)
    assert codestream.set_precision(cs16, 16) == cs16


@pytest.mark.parametrize(("bits", "signed", "shape"),
                         [(12, False, (240, 237)), (10, False, (512, 511)), (12, True, (97, 131))])
def test_an_rpcl_codestream_cut_to_a_lower_resolution_decodes_as_its_reduced_decode(
        bits: int, signed: bool, shape: tuple[int, int]) -> None:
    """Dropping resolutions is a header rewrite: every decoder reads the cut codestream in
    full as exactly the original decoded that many levels down, in far fewer bytes."""
    frame = _mr_like(*shape, bits, signed)
    full = encode(frame, syntax=HTJ2K_LOSSLESS_RPCL, bits_stored=bits)
    levels = codestream.parse(full).decompositions
    sizes = [len(full)]
    for reduce in range(1, levels + 1):
        cut = codestream.reduce_resolution(full, reduce)
        info = codestream.parse(cut)
        assert (info.rows, info.columns) == codestream.parse(full).shape_at(reduce)
        assert (info.decompositions, info.tile_parts, info.progression) == (
            levels - reduce, levels - reduce + 1, "RPCL")
        assert info.precision == bits and info.is_signed == signed and info.has_tlm
        assert info.reduced == reduce and codestream.parse(full).reduced == 0
        expected = decode(full, reduce=reduce)
        for backend in AVAILABLE_DECODERS:
            np.testing.assert_array_equal(decode(cut, backend=backend), expected,
                                          err_msg=f"{backend}, {reduce} level(s) down")
        sizes.append(len(cut))
    assert sizes == sorted(sizes, reverse=True) and sizes[2] < sizes[0] / 8
    # Cut again, the levels add up and it is still what the original decodes to.
    twice = codestream.reduce_resolution(codestream.reduce_resolution(full, 1), 1)
    assert codestream.parse(twice).reduced == 2
    np.testing.assert_array_equal(decode(twice), decode(full, reduce=2))


def test_only_a_codestream_with_a_tile_part_per_resolution_is_cut() -> None:
    frame = _mr_like(64, 64, 12, False)
    with pytest.raises(CodestreamError, match="not one tile-part per resolution"):
        codestream.reduce_resolution(encode(frame, syntax=HTJ2K_LOSSLESS, bits_stored=12), 1)
    rpcl = encode(frame, syntax=HTJ2K_LOSSLESS_RPCL, bits_stored=12)
    levels = codestream.parse(rpcl).decompositions
    for reduce in (0, levels + 1):
        with pytest.raises(CodestreamError, match="cannot drop"):
            codestream.reduce_resolution(rpcl, reduce)
    with pytest.raises(CodestreamError, match="SOC"):
        codestream.reduce_resolution(b"not a codestream", 1)
    # 16 bits of 16: no room for the overshoot a lower resolution has beside sharp edges.
    with pytest.raises(CodestreamError, match="fill their type"):
        codestream.reduce_resolution(encode(_mr_like(64, 64, 16, False),
                                            syntax=HTJ2K_LOSSLESS_RPCL), 1)


# ---------------------------------------------------------------- backends


def test_backend_table_order_and_report() -> None:
    assert backends.DECODER_PREFERENCE[0] == "openjph"
    assert AVAILABLE_DECODERS == [n for n in backends.DECODER_PREFERENCE if n in AVAILABLE_DECODERS]
    assert [b.NAME for b in backends.decoders(reduce=True)] == ["openjph"]
    assert "openjph" not in [b.NAME for b in backends.decoders(part1=True)]
    report = htj2k.backend_report()
    assert report["openjph"]["available"] and report["openjph"]["encode"]
    assert "openjph" in str(report["openjph"]["version"])
    with pytest.raises(BackendUnavailableError, match="unknown HTJ2K backend"):
        decode(encode(np.zeros((4, 4), np.uint8)), backend="kakadu")


def test_failing_backend_falls_back_to_the_next(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert len(AVAILABLE_DECODERS) >= 2, (
        "a second HTJ2K decoder is missing (OpenJPEG in imagecodecs or pylibjpeg-openjpeg, both "
        f"dependencies in pyproject.toml): run `make test`; found {AVAILABLE_DECODERS}")
    frame = _mr_like(50, 60, 12, False)
    cs = encode(frame, bits_stored=12)

    def broken(codestream: bytes, reduce: int = 0) -> np.ndarray:
        raise RuntimeError("simulated OpenJPH failure")

    monkeypatch.setattr(backends.module("openjph"), "decode", broken)
    with caplog.at_level(logging.DEBUG, logger="neuronova_lib.htj2k.codec"):
        np.testing.assert_array_equal(decode(cs), frame)
    assert "simulated OpenJPH failure" in caplog.text
    with pytest.raises(DecodeError, match="simulated OpenJPH failure"):
        decode(cs, backend="openjph")


def test_classic_jpeg2000_codestream_uses_an_openjpeg_backend() -> None:
    ds = pydicom.dcmread(_testdata("MR_small_jp2klossless.dcm"))
    from pydicom.encaps import generate_frames

    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    assert not htj2k.codestream_info(frame).is_htj2k
    np.testing.assert_array_equal(decode(frame), ds.pixel_array)
    with pytest.raises(BackendUnavailableError, match="classic JPEG 2000"):
        decode(frame, backend="openjph")


# ---------------------------------------------------------------- pydicom


def test_registration_is_idempotent_and_in_pydicom() -> None:
    from pydicom.pixels import get_decoder, get_encoder
    from pydicom.pixels.encoders.base import ENCODING_PROFILES

    htj2k.register()
    assert htj2k.register() is False  # already registered: nothing changes
    for uid in HTJ2K_SYNTAXES:
        encoder = get_encoder(uid)
        assert encoder.is_available and encoder.available_plugins == ("neuronova",)
        assert uid in ENCODING_PROFILES
        decoder = get_decoder(uid)
        assert next(iter(decoder._available)) == pydicom_plugin.PLUGIN  # tried first
        assert "pylibjpeg" in decoder.available_plugins  # kept as a fallback


@pytest.mark.parametrize("syntax", HTJ2K_SYNTAXES)
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "image_dfl.dcm"])
def test_dataset_compress_and_pixel_array(name: str, syntax: str) -> None:
    ds = pydicom.dcmread(_testdata(name))
    original = ds.pixel_array.copy()
    ds.compress(syntax)
    assert ds.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(ds.pixel_array, original)
    # pydicom's own pylibjpeg plugin agrees, so the files are not only readable by us
    from pydicom.pixels.decoders.base import get_decoder

    theirs, _meta = get_decoder(syntax).as_array(ds, decoding_plugin="pylibjpeg")
    np.testing.assert_array_equal(theirs, original)


def _multiframe(frames: int, photometric: str = "MONOCHROME2") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    stack = np.stack([_mr_like(45, 33, 12, False, seed=i) for i in range(frames)])
    ds.Rows, ds.Columns = stack.shape[1:]
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stack.tobytes()
    return ds


def test_multiframe_monochrome1_compress_and_lossy_option() -> None:
    ds = _multiframe(7, "MONOCHROME1")
    original = ds.pixel_array.copy()
    ds.compress(HTJ2K_LOSSLESS, generate_instance_uid=False)
    np.testing.assert_array_equal(ds.pixel_array, original)
    assert ds.PhotometricInterpretation == "MONOCHROME1"

    lossy = _multiframe(3)
    lossy.compress(HTJ2K_LOSSY, htj2k_quality=80)
    error = np.abs(lossy.pixel_array.astype(np.int32) - _multiframe(3).pixel_array).max()
    assert 0 < error <= 16


def test_pydicom_refuses_colour_before_encoding() -> None:
    ds = pydicom.dcmread(_testdata("SC_rgb_small_odd.dcm"))
    with pytest.raises(ValueError, match="not valid for pixel data encoded with"):
        ds.compress(HTJ2K_LOSSLESS)


def test_unused_high_bits_are_not_pixel_data() -> None:
    # A 12-bit dataset whose top 4 bits hold junk (as old overlay planes did):
    # pydicom hands the raw buffer to the plugin, which must ignore those bits.
    ds = _multiframe(2)
    junk = np.frombuffer(ds.PixelData, np.uint16) | np.uint16(0xF000)
    ds.PixelData = junk.tobytes()
    expected = junk & 0x0FFF
    ds.compress(HTJ2K_LOSSLESS, generate_instance_uid=False)
    np.testing.assert_array_equal(ds.pixel_array.ravel(), expected)


@pytest.mark.parametrize(("mct", "photometric"), [(True, "YBR_RCT"), (False, "RGB")])
def test_pydicom_decoder_plugin_reads_colour_like_pylibjpeg(mct: bool, photometric: str) -> None:
    # HTJ2K files from elsewhere may be colour: the plugin that pydicom now
    # tries first must give what pydicom's own plugin gives.
    import imagecodecs
    from pydicom.encaps import encapsulate
    from pydicom.pixels.decoders.base import get_decoder

    ds = pydicom.dcmread(_testdata("examples_rgb_color.dcm"))
    rgb = ds.pixel_array
    ds.PixelData = encapsulate([bytes(imagecodecs.htj2k_encode(rgb, reversible=True, rgb=mct))])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = UID(HTJ2K_LOSSLESS)
    ds.PhotometricInterpretation = photometric
    ours, _ = get_decoder(HTJ2K_LOSSLESS).as_array(ds)
    theirs, _ = get_decoder(HTJ2K_LOSSLESS).as_array(ds, decoding_plugin="pylibjpeg")
    np.testing.assert_array_equal(ours, rgb)
    np.testing.assert_array_equal(theirs, rgb)


@pytest.mark.e2e  # starts processes
def test_registration_is_an_explicit_call_in_a_fresh_process() -> None:
    # What a Dask worker does: import the package, register, then use pydicom only.
    code = (
        "import numpy as np, pydicom\n"
        "from pydicom.data import get_testdata_file\n"
        "from pydicom.pixels import get_encoder\n"
        "from neuronova_lib import htj2k, transcode, ingest, bulk\n"
        "try:\n"
        "    get_encoder('1.2.840.10008.1.2.4.201')\n"
        "    raise SystemExit('importing registered the encoder')\n"
        "except NotImplementedError:\n"
        "    pass  # importing changed nothing in pydicom\n"
        "assert htj2k.register() is True\n"
        "ds = pydicom.dcmread(get_testdata_file('MR_small.dcm'))\n"
        "ref = ds.pixel_array.copy()\n"
        "ds.compress('1.2.840.10008.1.2.4.201')\n"
        "assert np.array_equal(ds.pixel_array, ref)\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# ---------------------------------------------------------------- OpenJPH's own decoder


@pytest.mark.parametrize(
    ("bits", "signed", "syntax"),
    [
        (12, False, HTJ2K_LOSSLESS),
        (16, False, HTJ2K_LOSSLESS_RPCL),
        (8, False, HTJ2K_LOSSLESS),
        (12, True, HTJ2K_LOSSLESS),
    ],
)
@pytest.mark.e2e  # starts processes
def test_ojph_expand_decodes_our_codestreams(
    tmp_path: Path, bits: int, signed: bool, syntax: str
) -> None:
    frame = _mr_like(97, 131, bits, signed)
    codestream = encode(frame, syntax=syntax, bits_stored=bits)
    out = ojph_expand(codestream, frame.dtype, frame.shape, tmp_path)
    # ojph_expand's raw writer clips negative samples to 0 (see external_tools).
    expected = np.clip(frame, 0, None) if signed else frame
    np.testing.assert_array_equal(out, expected)
