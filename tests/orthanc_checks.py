"""Checks on what Orthanc holds, shared by the bulk and upload end-to-end tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom

from neuronova_lib.bulk import OrthancAccess
from neuronova_lib.wado import HTJ2K_SYNTAXES


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
