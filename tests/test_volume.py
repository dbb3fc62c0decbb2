"""Series → volume without a server: geometry, decoding, resampling, NIfTI, cache."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from neuronova_lib.dicomweb.cache import FrameCache
from neuronova_lib.dicomweb.frames import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    CodecUnavailableError,
    FrameDecodeError,
    PixelFormat,
    decode_frame,
    parse_media_type,
    response_transfer_syntax,
    split_multipart,
)
from neuronova_lib.volume import (
    GeometryError,
    Volume,
    load_dicom_files,
    series_geometry,
)

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]

HTJ2K_LOSSLESS_UID = "1.2.840.10008.1.2.4.201"


def _element(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)}


def instance(
    sop: str,
    position: list[float],
    orientation: list[float] = AXIAL,
    spacing: tuple[float, float] = (0.5, 0.8),
    rows: int = 3,
    columns: int = 4,
    **extra: dict[str, Any],
) -> dict[str, Any]:
    """DICOM JSON of one single-frame instance, as WADO-RS metadata carries it."""
    item = {
        "00080018": _element("UI", sop),
        "0020000D": _element("UI", "1.2.3"),
        "0020000E": _element("UI", "1.2.3.4"),
        "00200032": _element("DS", *position),
        "00200037": _element("DS", *orientation),
        "00280030": _element("DS", *spacing),
        "00280010": _element("US", rows),
        "00280011": _element("US", columns),
        "00280100": _element("US", 16),
        "00280101": _element("US", 12),
        "00280103": _element("US", 0),
        "0008103E": _element("LO", "T1 test"),
    }
    item.update(extra)
    return item


def _point(position: list[float], orientation: list[float], spacing: tuple[float, float],
           row: int, column: int) -> np.ndarray:
    """PS3.3 C.7.6.2.1.1, written out: IPP + column·Δc·(row direction) + row·Δr·(column direction)."""
    ipp = np.asarray(position, float)
    iop = np.asarray(orientation, float)
    return ipp + column * spacing[1] * iop[:3] + row * spacing[0] * iop[3:]


# -- geometry ---------------------------------------------------------------------------

def test_slices_are_sorted_along_the_normal_whatever_the_order() -> None:
    items = [instance(f"1.{k}", [-10.0, 20.0, 5.0 + 2.5 * k]) for k in range(6)]
    shuffled = items[:]
    random.Random(3).shuffle(shuffled)
    geometry = series_geometry(shuffled)
    assert [s.sop_uid for s in geometry.slices] == [f"1.{k}" for k in range(6)]
    assert geometry.shape == (4, 3, 6)  # (columns, rows, slices)
    np.testing.assert_allclose(geometry.affine_lps[:3, 2], [0, 0, 2.5])
    np.testing.assert_allclose(geometry.affine_lps[:3, 3], [-10, 20, 5])


def test_descending_positions_sort_by_the_normal_not_by_instance_number() -> None:
    # Sagittal: rows run anterior→posterior (+y), columns run superior→inferior (-z);
    # normal = (0,1,0) × (0,0,-1) = (-1,0,0): k grows towards the patient's right.
    sagittal = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    items = [instance(f"2.{k}", [30.0 - 4.0 * k, -50.0, 60.0], sagittal) for k in range(5)]
    geometry = series_geometry(list(reversed(items)))
    assert [s.sop_uid for s in geometry.slices] == [f"2.{k}" for k in range(5)]
    np.testing.assert_allclose(geometry.affine_lps[:3, 2], [-4.0, 0, 0])
    volume = Volume(np.zeros(geometry.shape, np.uint16), geometry.affine_lps)
    assert volume.orientation == "PIR"
    assert volume.orientation == "".join(nib.aff2axcodes(volume.affine_ras))


def test_affine_maps_a_voxel_to_the_dicom_patient_point() -> None:
    orientation = [0.8, 0.6, 0.0, 0.0, 0.0, -1.0]  # oblique rows, columns towards inferior
    spacing = (0.7, 1.3)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = [list(np.array([12.0, -7.0, 40.0]) + 3.0 * k * normal) for k in range(4)]
    items = [instance(f"3.{k}", positions[k], orientation, spacing) for k in range(4)]
    volume = Volume(np.zeros((4, 3, 4), np.int16),
                    series_geometry(items[::-1]).affine_lps)
    row, column, k = 2, 3, 1
    expected = _point(positions[k], orientation, spacing, row, column)
    np.testing.assert_allclose(volume.voxel_to_lps([column, row, k]), expected, atol=1e-9)
    ras = volume.affine_ras @ [column, row, k, 1]
    np.testing.assert_allclose(ras[:3], expected * [-1, -1, 1], atol=1e-9)
    np.testing.assert_allclose(volume.spacing, (1.3, 0.7, 3.0))
    assert volume.affine is not None and np.array_equal(volume.affine, volume.affine_ras)


def test_demo_convention_axial_series_is_lps_with_slice_k_transposed() -> None:
    positions = [[-100.0, -120.0, -60.0 + 4.0 * k] for k in range(3)]
    items = [instance(f"4.{k}", positions[k], spacing=(2.0, 1.5)) for k in range(3)]
    geometry = series_geometry(items)
    stack = np.arange(3 * 3 * 4, dtype=np.uint16).reshape(3, 3, 4)  # (slices, rows, columns)
    volume = Volume.from_slice_stack(stack, geometry, items)
    assert volume.array.shape == (4, 3, 3)
    for k in range(3):
        assert np.array_equal(volume.array[:, :, k].T, stack[k])
    assert volume.orientation == "LPS"
    assert volume.sop_uids == ("4.0", "4.1", "4.2")
    assert volume.metadata["SeriesDescription"] == "T1 test"
    assert np.shares_memory(volume.array, stack)


def test_a_gap_in_the_slices_is_an_error_that_names_it() -> None:
    zs = [0.0, 2.0, 4.0, 8.0, 10.0]
    items = [instance(f"5.{k}", [0.0, 0.0, z]) for k, z in enumerate(zs)]
    with pytest.raises(GeometryError, match="not uniform.*5.2.*5.3"):
        series_geometry(items)
    series_geometry(items, spacing_tolerance=1.0)  # accepted when asked


def test_two_slices_at_one_position_are_an_error() -> None:
    items = [instance("6.1", [0, 0, 0]), instance("6.2", [0, 0, 2]), instance("6.3", [0, 0, 2])]
    with pytest.raises(GeometryError, match="share a position"):
        series_geometry(items)


def test_mixed_orientation_size_or_missing_position_are_errors() -> None:
    base = [instance(f"7.{k}", [0, 0, 2.0 * k]) for k in range(3)]
    with pytest.raises(GeometryError, match="ImageOrientationPatient"):
        series_geometry([*base, instance("7.9", [0, 0, 6], [0, 1, 0, 0, 0, -1])])
    with pytest.raises(GeometryError, match="differ in size"):
        series_geometry([*base, instance("7.9", [0, 0, 6], rows=5)])
    missing = instance("7.9", [0, 0, 6])
    del missing["00200032"]
    with pytest.raises(GeometryError, match="ImagePositionPatient"):
        series_geometry([*base, missing])


def test_a_single_slice_takes_its_thickness_from_the_metadata() -> None:
    item = instance("8.1", [1, 2, 3], **{"00180050": _element("DS", 5.0)})
    geometry = series_geometry([item])
    np.testing.assert_allclose(geometry.affine_lps[:3, 2], [0, 0, 5.0])


def test_enhanced_multiframe_frames_are_placed_from_functional_groups() -> None:
    def group(z: float) -> dict[str, Any]:
        return {"00209113": _element("SQ", {"00200032": _element("DS", 0.0, 0.0, z)})}

    shared = {
        "00209116": _element("SQ", {"00200037": _element("DS", *AXIAL)}),
        "00289110": _element("SQ", {"00280030": _element("DS", 0.9, 0.9)}),
    }
    item = instance("9.1", [0, 0, 0])
    for tag in ("00200032", "00200037", "00280030"):
        del item[tag]
    item["00280008"] = _element("IS", 3)
    item["52009229"] = _element("SQ", shared)
    item["52009230"] = _element("SQ", group(6.0), group(0.0), group(3.0))
    geometry = series_geometry([item])
    assert [s.frame_number for s in geometry.slices] == [2, 3, 1]
    np.testing.assert_allclose(geometry.affine_lps[:3, 2], [0, 0, 3.0])
    np.testing.assert_allclose(np.diag(geometry.affine_lps)[:2], [0.9, 0.9])


# -- resampling, NIfTI, MONAI -----------------------------------------------------------

def _volume(shape: tuple[int, int, int] = (5, 6, 7), **kwargs: Any) -> Volume:
    affine = np.diag([1.5, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-4.0, 10.0, 20.0]
    array = np.random.default_rng(0).integers(0, 4096, size=shape).astype(np.uint16)
    return Volume(array, affine, study_uid="1.2", series_uid="1.2.3",
                  metadata={"SeriesDescription": "T1"}, **kwargs)


def test_resample_onto_the_same_grid_returns_the_same_array_object() -> None:
    volume = _volume()
    twin = Volume(volume.array.copy(), volume.affine_lps.copy(), series_uid="1.2.4")
    result = volume.resample_to(twin)
    assert result is volume and result.array is volume.array


def test_resample_onto_a_shifted_grid_moves_values_by_whole_voxels() -> None:
    volume = _volume()
    shifted_affine = volume.affine_lps.copy()
    shifted_affine[:3, 3] += volume.affine_lps[:3, 0]  # the reference starts one voxel further along i
    reference = Volume(np.zeros((4, 6, 7), np.uint16), shifted_affine)
    result = volume.resample_to(reference)
    assert result.array.dtype == np.float32 and result.array.shape == (4, 6, 7)
    np.testing.assert_array_equal(result.array, volume.array[1:5].astype(np.float32))
    np.testing.assert_array_equal(result.affine_lps, shifted_affine)
    assert result.sop_uids == ()


def test_resample_interpolates_linearly_between_voxels() -> None:
    array = np.zeros((3, 1, 1), np.uint16)
    array[:, 0, 0] = [0, 100, 200]
    volume = Volume(array, np.eye(4))
    half = np.eye(4)
    half[0, 3] = 0.5
    reference = Volume(np.zeros((2, 1, 1), np.uint16), half)
    np.testing.assert_allclose(volume.resample_to(reference).array[:, 0, 0], [50, 150])


def test_nifti_round_trip_keeps_values_dtype_and_affine(tmp_path: Path) -> None:
    volume = _volume()
    path = tmp_path / "t1.nii.gz"
    volume.to_nifti(path)
    image = nib.load(path)
    data = np.asanyarray(image.dataobj)
    assert data.dtype == np.uint16
    assert np.array_equal(data, volume.array)
    np.testing.assert_allclose(image.affine, volume.affine_ras, atol=1e-5)
    assert image.header.get_sform(coded=True)[1] == 1
    assert "".join(nib.aff2axcodes(image.affine)) == volume.orientation


def test_four_channels_go_last_in_nifti() -> None:
    volume = _volume(channels=("t1", "t1c"), shape=(2, 5, 6, 7))
    image = volume.to_nifti()
    assert image.shape == (5, 6, 7, 2)
    assert np.array_equal(np.asanyarray(image.dataobj)[..., 1], volume.array[1])


def test_to_metatensor_carries_the_ras_affine_or_says_how_to_install_monai() -> None:
    """MONAI is optional: with it, a MetaTensor; without it, an error that says what to install."""
    volume = _volume()
    if importlib.util.find_spec("monai") is None:
        with pytest.raises(ImportError, match="pip install monai"):
            volume.to_metatensor()
        return
    tensor = volume.to_metatensor()
    assert tuple(tensor.shape) == (1, 5, 6, 7)
    np.testing.assert_allclose(tensor.affine.numpy(), volume.affine_ras)
    assert np.array_equal(tensor[0].numpy(), volume.array.astype(np.int32))
    assert tensor.meta["SeriesInstanceUID"] == "1.2.3"


def test_rescaled_applies_slope_and_intercept() -> None:
    volume = _volume()
    volume.metadata.update(RescaleSlope=2, RescaleIntercept=-1024)
    np.testing.assert_array_equal(volume.rescaled(), volume.array.astype(np.float32) * 2 - 1024)


# -- frame decoding ------------------------------------------------------------------------

FMT = PixelFormat(rows=3, columns=4, bits_allocated=16, bits_stored=12, pixel_representation=0)


def test_native_frames_decode_with_frombuffer() -> None:
    pixels = np.arange(12, dtype="<u2").reshape(3, 4) * 300
    assert np.array_equal(decode_frame(pixels.tobytes(), EXPLICIT_VR_LITTLE_ENDIAN, FMT), pixels)
    assert np.array_equal(
        decode_frame(pixels.astype(">u2").tobytes(), EXPLICIT_VR_BIG_ENDIAN, FMT), pixels)


def test_signed_12_bit_values_are_sign_extended() -> None:
    fmt = PixelFormat(rows=1, columns=2, bits_allocated=16, bits_stored=12, pixel_representation=1)
    raw = np.array([0x0FFF, 0x0005], dtype="<u2").tobytes()  # -1 and 5 in 12-bit two's complement
    assert decode_frame(raw, EXPLICIT_VR_LITTLE_ENDIAN, fmt).tolist() == [[-1, 5]]


def test_a_codestream_labelled_uncompressed_is_refused_with_the_likely_cause() -> None:
    codestream = b"\xff\x4f\xff\x51" + bytes(40)
    with pytest.raises(FrameDecodeError, match=r"HTJ2K.*1\.2\.840\.10008\.1\.2\.1"):
        decode_frame(codestream, EXPLICIT_VR_LITTLE_ENDIAN, FMT)
    with pytest.raises(FrameDecodeError, match="needs 24"):
        decode_frame(bytes(10), EXPLICIT_VR_LITTLE_ENDIAN, FMT)


def test_htj2k_without_the_codec_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "neuronova_lib.htj2k", None)  # as if not installed
    with pytest.raises(CodecUnavailableError, match="neuronova_lib.htj2k"):
        decode_frame(b"\xff\x4f\xff\x51" + bytes(40), HTJ2K_LOSSLESS_UID, FMT)


def test_htj2k_frames_are_decoded_by_the_platform_codec() -> None:
    from neuronova_lib import htj2k
    pixels = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 341) & 0x0FFF
    codestream = htj2k.encode(pixels, bits_stored=12)
    assert np.array_equal(decode_frame(codestream, HTJ2K_LOSSLESS_UID, FMT), pixels)
    with pytest.raises(FrameDecodeError, match="does not start with a JPEG 2000 codestream"):
        decode_frame(pixels.tobytes(), HTJ2K_LOSSLESS_UID, FMT)


def test_other_syntaxes_go_through_pydicom() -> None:
    from pydicom.data import get_testdata_file
    from pydicom.encaps import generate_frames

    rle = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    plain = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    fmt = PixelFormat(rows=rle.Rows, columns=rle.Columns, bits_allocated=rle.BitsAllocated,
                      bits_stored=rle.BitsStored, pixel_representation=rle.PixelRepresentation)
    frame = next(generate_frames(rle.PixelData, number_of_frames=1))
    assert np.array_equal(decode_frame(frame, rle.file_meta.TransferSyntaxUID, fmt), plain.pixel_array)


def test_multipart_parts_keep_their_transfer_syntax() -> None:
    boundary = "b0und-ary"
    body = (f"--{boundary}\r\nContent-Type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
            f"\r\nContent-Length: 4\r\n\r\n").encode() + b"\x01\x02\r\n" + (
        f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + b"xyz" + (
        f"\r\n--{boundary}--\r\n").encode()
    content_type = (f'multipart/related; type="application/octet-stream; '
                    f'transfer-syntax=1.2.840.10008.1.2.4.201"; boundary={boundary}')
    parts = split_multipart(content_type, body)
    assert [p.content for p in parts] == [b"\x01\x02\r\n", b"xyz"]
    assert [p.transfer_syntax for p in parts] == ["1.2.840.10008.1.2.1", None]
    assert response_transfer_syntax(content_type) == "1.2.840.10008.1.2.4.201"
    assert parse_media_type('a/b; q="x; y"; k=v') == ("a/b", {"q": "x; y", "k": "v"})
    with pytest.raises(FrameDecodeError, match="Content-Length"):
        split_multipart(content_type, body.replace(b"Content-Length: 4", b"Content-Length: 9"))


# -- local files and the cache ------------------------------------------------------------

def _write_series(folder: Path, volume: np.ndarray, spacing: tuple[float, float, float],
                  origin: tuple[float, float, float]) -> list[Path]:
    """One uncompressed file per slice in the demo's convention (slice k = volume[:, :, k].T)."""
    study, series = generate_uid(), generate_uid()
    paths = []
    for k in range(volume.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, "MR"
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[2]]
        ds.ImageOrientationPatient = AXIAL
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T).astype("<u2").tobytes()
        path = folder / f"{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_local_files_load_into_the_demo_convention(tmp_path: Path) -> None:
    truth = np.random.default_rng(1).integers(0, 4096, size=(6, 5, 4)).astype(np.uint16)
    paths = _write_series(tmp_path, truth, (1.5, 2.0, 2.5), (-3.0, 4.0, 5.0))
    random.Random(0).shuffle(paths)
    volume = load_dicom_files(paths)
    assert np.array_equal(volume.array, truth)
    expected = np.diag([1.5, 2.0, 2.5, 1.0])
    expected[:3, 3] = [-3.0, 4.0, 5.0]
    np.testing.assert_allclose(volume.affine_lps, expected)
    assert volume.metadata["TransferSyntaxUIDs"] == [ExplicitVRLittleEndian]


def test_cache_round_trip_is_atomic_and_keyed_by_syntax(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path)
    assert cache.get_frame("1.2.3", 1) is None
    cache.put_frame("1.2.3", 1, EXPLICIT_VR_LITTLE_ENDIAN, b"abc")
    assert cache.get_frame("1.2.3", 1) == (EXPLICIT_VR_LITTLE_ENDIAN, b"abc")
    assert cache.get_frame("1.2.3", 2) is None
    assert (cache.hits, cache.misses, cache.writes) == (1, 2, 1)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    with pytest.raises(ValueError, match="not a DICOM UID"):
        cache.put_frame("../../etc", 1, EXPLICIT_VR_LITTLE_ENDIAN, b"x")
    cache.put_metadata("1.2", "1.2.3", [{"00080018": {"vr": "UI", "Value": ["1.2.3.4"]}}])
    assert cache.get_metadata("1.2", "1.2.3") == [{"00080018": {"vr": "UI", "Value": ["1.2.3.4"]}}]
