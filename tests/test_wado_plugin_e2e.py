"""HTJ2K frames and rendered images through nginx → guard → Orthanc's NeuroNova WADO plugin."""

from __future__ import annotations

import io
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.multival import MultiValue
from pydicom.uid import generate_uid

from neuronova_lib import rendering, wado

pytestmark = pytest.mark.e2e

HTJ2K = "1.2.840.10008.1.2.4.201"
OCTETS = 'multipart/related; type="application/octet-stream"'


def _htj2k_copy(path: str, frames: int = 1) -> tuple[bytes, pydicom.Dataset, list[bytes], np.ndarray]:
    """A new instance with HTJ2K pixel data, encoded by OpenJPH (imagecodecs)."""
    ds = pydicom.dcmread(path)
    base = ds.pixel_array
    stack = np.stack([np.roll(base, shift, axis=1) for shift in range(frames)])
    codestreams = [bytes(imagecodecs.htj2k_encode(f, reversible=True)) for f in stack]
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = HTJ2K
    ds.NumberOfFrames = frames
    ds.PixelData = encapsulate(codestreams)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), ds, codestreams, stack


@pytest.fixture(scope="module")
def htj2k_instance(platform: Any) -> dict[str, Any]:
    data, ds, codestreams, stack = _htj2k_copy(get_testdata_file("MR_small.dcm"), frames=3)
    platform.store.store(data)
    base = (f"{platform.url}/api/pacs/dicom-web/studies/{ds.StudyInstanceUID}"
            f"/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")
    return {"ds": ds, "codestreams": codestreams, "stack": stack, "base": base}


def _get(platform: Any, url: str, accept: str | None, **params: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {platform.access_token()}"}
    if accept:
        headers["Accept"] = accept
    return requests.get(url, headers=headers, params=params, timeout=20)


@pytest.mark.parametrize("accept", [
    f"{OCTETS}; transfer-syntax=*",
    "multipart/related; type=application/octet-stream; transfer-syntax=*",  # OHIF, unquoted
    f'{OCTETS}; transfer-syntax="*"',  # OHIF's own set-up, quoted
    f"{OCTETS}; transfer-syntax={HTJ2K}",
])
def test_htj2k_frames_as_stored_with_the_right_label(platform: Any, htj2k_instance: dict,
                                                     accept: str) -> None:
    answer = _get(platform, htj2k_instance["base"] + "/frames/1,3", accept)
    assert answer.status_code == 200, answer.text[:200]
    parts = wado.split_multipart(answer.content)
    # Fragments are stored at even length: an odd codestream carries one pad byte after EOC.
    stored = [cs + b"\x00" * (len(cs) % 2) for cs in htj2k_instance["codestreams"]]
    assert parts == [(HTJ2K, stored[0]), (HTJ2K, stored[2])]


def test_htj2k_frames_decoded_when_native_is_asked(platform: Any, htj2k_instance: dict) -> None:
    answer = _get(platform, htj2k_instance["base"] + "/frames/2", OCTETS)
    assert answer.status_code == 200
    [(label, data)] = wado.split_multipart(answer.content)
    assert label == wado.EXPLICIT_VR_LITTLE_ENDIAN
    expected = htj2k_instance["stack"][1]
    assert np.array_equal(np.frombuffer(data, dtype=expected.dtype.newbyteorder("<")).reshape(expected.shape),
                          expected)


def test_unproducible_syntax_and_missing_frames(platform: Any, htj2k_instance: dict) -> None:
    jpeg = _get(platform, htj2k_instance["base"] + "/frames/1",
                f"{OCTETS}; transfer-syntax=1.2.840.10008.1.2.4.50")
    assert jpeg.status_code == 406
    assert _get(platform, htj2k_instance["base"] + "/frames/4", OCTETS).status_code == 404


def test_rendered_and_thumbnail_of_an_htj2k_instance(platform: Any, htj2k_instance: dict) -> None:
    png = _get(platform, htj2k_instance["base"] + "/frames/1/rendered", "image/png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    image = imagecodecs.png_decode(png.content)
    ds = htj2k_instance["ds"]
    tags = {k: "\\".join(map(str, v)) if isinstance(v, MultiValue) else str(v)
            for k in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept",
                      "PhotometricInterpretation") if (v := ds.get(k)) is not None}
    expected = rendering.render(htj2k_instance["stack"][0], tags, rendering.RenderParams())
    assert np.array_equal(image, expected)  # PNG is lossless: the plugin windowed exactly so
    assert image.max() > image.min()
    thumb = _get(platform, htj2k_instance["base"] + "/thumbnail", "image/jpeg", viewport="32,32")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert imagecodecs.jpeg8_decode(thumb.content).shape[:2] == (32, 32)


def test_native_instance_frames_are_byte_identical(platform: Any) -> None:
    a = platform.study_a
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    for accept in (OCTETS, f"{OCTETS}; transfer-syntax=*", None):
        answer = _get(platform, platform.url + a.frame_path(), accept)
        assert answer.status_code == 200
        [(label, data)] = wado.split_multipart(answer.content)
        assert data == ds.PixelData
        assert label == wado.EXPLICIT_VR_LITTLE_ENDIAN


def test_classic_compressed_instance_is_transcoded_to_native(platform: Any) -> None:
    path = get_testdata_file("MR_small_RLE.dcm")
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer)
    platform.store.store(buffer.getvalue())
    url = (f"{platform.url}/api/pacs/dicom-web/studies/{ds.StudyInstanceUID}/series/"
           f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1")
    native = _get(platform, url, OCTETS)
    [(label, data)] = wado.split_multipart(native.content)
    assert label == wado.EXPLICIT_VR_LITTLE_ENDIAN
    assert np.array_equal(np.frombuffer(data, "<i2").reshape(64, 64), ds.pixel_array)
    stored = _get(platform, url, f"{OCTETS}; transfer-syntax=*")
    [(label, _)] = wado.split_multipart(stored.content)
    assert label == "1.2.840.10008.1.2.5"


def test_hierarchy_is_checked_by_the_plugin(platform: Any, htj2k_instance: dict) -> None:
    ds = htj2k_instance["ds"]
    wrong = (f"{platform.url}/api/pacs/dicom-web/studies/{ds.StudyInstanceUID}/series/"
             f"{platform.study_a.series}/instances/{ds.SOPInstanceUID}/frames/1")
    assert _get(platform, wrong, OCTETS).status_code == 404


def test_large_answers_pass_intact(platform: Any) -> None:
    """Answers larger than nginx's buffers are spooled to its temp dir and arrive whole."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    frames = 8
    ds.Rows = ds.Columns = 512
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 4096, size=(frames, 512, 512), dtype=np.uint16)
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
    ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    platform.store.store(buffer.getvalue())
    base = (f"{platform.url}/api/pacs/dicom-web/studies/{ds.StudyInstanceUID}"
            f"/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")
    answer = _get(platform, base, 'multipart/related; type="application/dicom"')
    assert answer.status_code == 200
    assert len(answer.content) > 4 * 1024 * 1024
    assert pixels.tobytes() in answer.content
    frames_answer = _get(platform, base + "/frames/" + ",".join(map(str, range(1, frames + 1))), OCTETS)
    parts = wado.split_multipart(frames_answer.content)
    assert [data for _, data in parts] == [f.tobytes() for f in pixels]


DICOM_PARTS = 'multipart/related; type="application/dicom"'


def test_instance_retrieval_as_stored_and_as_native(platform: Any, htj2k_instance: dict) -> None:
    stored = _get(platform, htj2k_instance["base"], f"{DICOM_PARTS}; transfer-syntax=*")
    assert stored.status_code == 200
    [(label, data)] = wado.split_multipart(stored.content)
    assert label == HTJ2K
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == HTJ2K
    assert ds.SOPInstanceUID == htj2k_instance["ds"].SOPInstanceUID
    native = _get(platform, htj2k_instance["base"], DICOM_PARTS)
    assert native.status_code == 200  # Orthanc's DICOMweb plugin answers 500 here
    [(label, data)] = wado.split_multipart(native.content)
    assert label == wado.EXPLICIT_VR_LITTLE_ENDIAN
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == wado.EXPLICIT_VR_LITTLE_ENDIAN
    assert np.array_equal(ds.pixel_array, htj2k_instance["stack"])


def test_series_and_study_retrieval_label_every_part(platform: Any, htj2k_instance: dict) -> None:
    ds = htj2k_instance["ds"]
    series_url = htj2k_instance["base"].rsplit("/instances/", 1)[0]
    series = _get(platform, series_url, f"{DICOM_PARTS}; transfer-syntax=*")
    assert [label for label, _ in wado.split_multipart(series.content)] == [HTJ2K]
    study_url = series_url.rsplit("/series/", 1)[0]
    study = _get(platform, study_url, f"{DICOM_PARTS}; transfer-syntax=*")
    assert study.status_code == 200
    labels = {label for label, _ in wado.split_multipart(study.content)}
    assert {HTJ2K, wado.EXPLICIT_VR_LITTLE_ENDIAN} <= labels  # MR_small's study holds both
    assert ds.StudyInstanceUID == platform.study_a.study
    elsewhere = f"{platform.url}/api/pacs/dicom-web/studies/{platform.study_b.study}/series/{ds.SeriesInstanceUID}"
    assert _get(platform, elsewhere, DICOM_PARTS).status_code == 404
