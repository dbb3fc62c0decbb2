"""dicomweb-client, a stock DICOMweb client, at its defaults against the real stack.

Every call goes through nginx and the guard with a bearer token, as a user's
``DICOMwebClient(url, session=...)`` would send it; nothing here sets a media
type, so each request carries dicomweb-client's own Accept header (frames:
``multipart/related; type="*/*"``). One study holds an HTJ2K instance of three
frames and an uncompressed one; every pixel that comes back is compared with
the pixels stored.
"""

from __future__ import annotations

import io
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from neuronova_lib import htj2k

pytestmark = pytest.mark.e2e

HTJ2K = "1.2.840.10008.1.2.4.201"


def _instance(study: str, syntax: str, frames: int) -> tuple[bytes, pydicom.Dataset, np.ndarray]:
    """MR_small in a new series of ``study``: ``frames`` shifted copies, HTJ2K or uncompressed."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    stack = np.stack([np.roll(ds.pixel_array, 7 * shift, axis=1) for shift in range(frames)])
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.NumberOfFrames = frames
    if syntax == HTJ2K:
        ds.file_meta.TransferSyntaxUID = HTJ2K
        ds.PixelData = encapsulate([bytes(imagecodecs.htj2k_encode(f, reversible=True))
                                    for f in stack])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = stack.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), ds, stack


@pytest.fixture(scope="module")
def stored(platform: Any) -> dict[str, Any]:
    study = generate_uid()
    result: dict[str, Any] = {"study": study}
    for name, syntax, frames in (("htj2k", HTJ2K, 3), ("native", pydicom.uid.ExplicitVRLittleEndian, 2)):
        data, ds, stack = _instance(study, syntax, frames)
        platform.store.store(data)
        result[name] = {"ds": ds, "stack": stack, "series": ds.SeriesInstanceUID,
                        "sop": ds.SOPInstanceUID}
    return result


@pytest.fixture(scope="module")
def client(platform: Any) -> DICOMwebClient:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {platform.access_token('clinician', ttl=900)}"
    return DICOMwebClient(f"{platform.url}/api/pacs/dicom-web", session=session)


def _uids(items: list[dict[str, Any]], tag: str) -> set[str]:
    return {item[tag]["Value"][0] for item in items}


def test_search_at_every_level(client: DICOMwebClient, stored: dict[str, Any]) -> None:
    study = stored["study"]
    assert study in _uids(client.search_for_studies(), "0020000D")
    found = client.search_for_studies(search_filters={"StudyInstanceUID": study},
                                      fields=["StudyDescription", "NumberOfStudyRelatedSeries"])
    assert _uids(found, "0020000D") == {study}
    series = client.search_for_series(study)
    assert _uids(series, "0020000E") == {stored["htj2k"]["series"], stored["native"]["series"]}
    everywhere = client.search_for_series(search_filters={"StudyInstanceUID": study}, fields=["Modality"])
    assert _uids(everywhere, "0020000E") == _uids(series, "0020000E")
    instances = client.search_for_instances(study, stored["htj2k"]["series"])
    assert _uids(instances, "00080018") == {stored["htj2k"]["sop"]}
    assert _uids(client.search_for_instances(study), "00080018") == {
        stored["htj2k"]["sop"], stored["native"]["sop"]}


def test_metadata_at_every_level(client: DICOMwebClient, stored: dict[str, Any]) -> None:
    study, h = stored["study"], stored["htj2k"]
    assert _uids(client.retrieve_study_metadata(study), "00080018") == {
        h["sop"], stored["native"]["sop"]}
    assert _uids(client.retrieve_series_metadata(study, h["series"]), "00080018") == {h["sop"]}
    [metadata] = [client.retrieve_instance_metadata(study, h["series"], h["sop"])]
    assert metadata["00280008"]["Value"] == [3]


def _pixels(ds: pydicom.Dataset) -> np.ndarray:
    """Decoded frames; HTJ2K with the platform's codec, frame by frame."""
    if ds.file_meta.TransferSyntaxUID == HTJ2K:
        return np.stack([htj2k.decode(frame) for frame in
                         pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames)])
    return ds.pixel_array


@pytest.mark.parametrize("name", ["htj2k", "native"])
def test_instance_series_and_study_retrieval(client: DICOMwebClient, stored: dict[str, Any],
                                             name: str) -> None:
    """An instance is asked ``transfer-syntax=*`` (stored syntax); a series or study without
    a syntax (explicit VR little endian, HTJ2K decoded). Same instance, same pixels, either way."""
    item = stored[name]
    stored_syntax = item["ds"].file_meta.TransferSyntaxUID
    instance = client.retrieve_instance(stored["study"], item["series"], item["sop"])
    assert instance.file_meta.TransferSyntaxUID == stored_syntax
    assert instance.SOPInstanceUID == item["sop"]
    assert np.array_equal(_pixels(instance), item["stack"])
    [series] = client.retrieve_series(stored["study"], item["series"])
    assert series.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert series.SOPInstanceUID == item["sop"]
    assert np.array_equal(_pixels(series), item["stack"])
    study = client.retrieve_study(stored["study"])
    assert sorted(ds.SOPInstanceUID for ds in study) == sorted(
        (stored["htj2k"]["sop"], stored["native"]["sop"]))
    [same] = [ds for ds in study if ds.SOPInstanceUID == item["sop"]]
    assert np.array_equal(_pixels(same), item["stack"])


def test_frames_at_the_default_media_type(client: DICOMwebClient, stored: dict[str, Any]) -> None:
    """``type="*/*"``: HTJ2K frames come as stored, uncompressed ones as they are; all exact."""
    h, n = stored["htj2k"], stored["native"]
    frames = client.retrieve_instance_frames(stored["study"], h["series"], h["sop"], [1, 3])
    for data, expected in zip(frames, h["stack"][[0, 2]], strict=True):
        assert data[:4] == b"\xff\x4f\xff\x51"  # a JPEG 2000 codestream (SOC, SIZ)
        assert np.array_equal(htj2k.decode(data), expected)
    frames = client.retrieve_instance_frames(stored["study"], n["series"], n["sop"], [2])
    [data] = frames
    assert np.array_equal(np.frombuffer(data, n["stack"].dtype).reshape(n["stack"][1].shape),
                          n["stack"][1])


def test_the_frames_answer_is_labelled(platform: Any, client: DICOMwebClient,
                                       stored: dict[str, Any]) -> None:
    """What dicomweb-client sent, as a raw request: the parts say image/jphc and their syntax."""
    h = stored["htj2k"]
    url = (f"{platform.url}/api/pacs/dicom-web/studies/{stored['study']}/series/{h['series']}"
           f"/instances/{h['sop']}/frames/2")
    answer = client._session.get(url, headers={"Accept": 'multipart/related; type="*/*"'}, timeout=20)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(
        f'multipart/related; type="image/jphc"; transfer-syntax={HTJ2K}')
    assert f"Content-Type: image/jphc; transfer-syntax={HTJ2K}".encode() in answer.content[:300]


@pytest.mark.parametrize("name", ["htj2k", "native"])
def test_rendered_at_the_defaults(client: DICOMwebClient, stored: dict[str, Any], name: str) -> None:
    item = stored[name]
    rows, columns = item["stack"].shape[1:]
    image = client.retrieve_instance_rendered(stored["study"], item["series"], item["sop"])
    with Image.open(io.BytesIO(image)) as decoded:
        assert (decoded.format, decoded.size) == ("JPEG", (columns, rows))
    frame = client.retrieve_instance_frames_rendered(stored["study"], item["series"], item["sop"], [2])
    with Image.open(io.BytesIO(frame)) as decoded:
        assert (decoded.format, decoded.size) == ("JPEG", (columns, rows))
        # Frame 2 is frame 1 shifted: the renderings differ.
        assert decoded.tobytes() != Image.open(io.BytesIO(image)).tobytes()


def test_bulk_data_at_the_default_media_type(platform: Any, client: DICOMwebClient,
                                             stored: dict[str, Any]) -> None:
    """Pixel data by its BulkDataURI as written, ``retrieve_bulkdata`` at its default
    ``type="*/*"``: the URI is the public one (tests/test_public_urls_e2e.py).
    (Orthanc leaves encapsulated pixel data, the HTJ2K instance's, out of its metadata.)
    """
    n = stored["native"]
    metadata = client.retrieve_instance_metadata(stored["study"], n["series"], n["sop"])
    uri = metadata["7FE00010"]["BulkDataURI"]
    assert uri == (f"{platform.settings.public_dicomweb_url}/studies/{stored['study']}"
                   f"/series/{n['series']}/instances/{n['sop']}/bulk/7fe00010")
    [data] = client.retrieve_bulkdata(uri)
    assert data == n["stack"].tobytes()
