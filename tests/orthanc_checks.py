"""Checks on what Orthanc holds, shared by the end-to-end tests (bulk, upload, ingest, listener)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import requests

from neuronova_lib.bulk import OrthancAccess
from neuronova_lib.wado import HTJ2K_SYNTAXES, split_multipart


def assert_stored_as_htj2k(orthanc: OrthancAccess, source: Path) -> str:
    """The instance of ``source`` is in Orthanc as HTJ2K with exactly its pixels; its id."""
    original = pydicom.dcmread(source)
    instance_id = orthanc.find_instance(original.SOPInstanceUID)
    assert instance_id, f"{source} is not in Orthanc"
    stored = orthanc.instance_file(instance_id)
    assert stored is not None
    ds = pydicom.dcmread(io.BytesIO(stored))
    assert ds.file_meta.TransferSyntaxUID in HTJ2K_SYNTAXES, source
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    assert ds.SeriesInstanceUID == original.SeriesInstanceUID
    assert np.array_equal(ds.pixel_array, original.pixel_array), f"pixels differ: {source}"
    return instance_id


def retrieve_instance(url: str, token: str, data: bytes) -> bytes:
    """The instance ``data`` names, as WADO-RS returns it through nginx and the guard.

    ``transfer-syntax=*`` asks for it as stored (implicit VR excepted: DICOMweb
    answers that in explicit VR little endian).
    """
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    answer = requests.get(
        f"{url}/api/pacs/dicom-web/studies/{ds.StudyInstanceUID}/series/"
        f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
        timeout=60, headers={
            "Authorization": f"Bearer {token}",
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert answer.status_code == 200, answer.text[:300]
    parts = split_multipart(answer.content)
    assert parts is not None and len(parts) == 1
    return parts[0][1]
