"""A DICOM SEG read back onto a study's volume (neuronova_lib.dicomweb.segmentation).

The SEG is the one the inference job writes (neuronova_lib.ai.results.build_seg), over a
real synthetic T1 series loaded as a Volume; reading it back must give the masks voxel for
voxel, in any slice order, and the SR's volumes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from neuronova_lib.ai.results import ModelInfo, build_results
from neuronova_lib.demo import SMALL_SHAPE, SMALL_SPACING, write_demo_cases
from neuronova_lib.dicomweb import Segmentation, seg_masks
from neuronova_lib.volume import volume_from_datasets


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    info = write_demo_cases(tmp_path_factory.mktemp("seg-case"), cases=1, seed=5,
                            shape=SMALL_SHAPE, spacing=SMALL_SPACING)[0]
    files = sorted(Path(info.dicom_dirs["t1"]).glob("*.dcm"))
    datasets = [pydicom.dcmread(p) for p in files]
    labels = np.asarray(nib.load(info.labels).dataobj)
    masks = np.stack([(labels == 1) | (labels == 4), labels > 0, labels == 4])
    masks[2, :, :, : masks.shape[-1] // 2] = False  # a segment with empty slices
    results = build_results(datasets[::-1], masks, model=ModelInfo("m", "1", "run"),
                            job_id="job-7", created=dt.datetime(2026, 12, 7, tzinfo=dt.UTC))
    return {"info": info, "datasets": datasets, "masks": masks, "results": results}


def test_the_seg_reads_back_voxel_for_voxel_with_the_sr_volumes(case: dict) -> None:
    volume = volume_from_datasets(case["datasets"][::2] + case["datasets"][1::2])  # any order
    found = seg_masks(case["results"].seg, volume)
    assert isinstance(found, Segmentation)
    assert found.regions == ("TC", "WT", "ET")
    assert found.masks.dtype == bool and found.masks.shape == case["masks"].shape
    assert np.array_equal(found.masks, case["masks"])
    assert np.array_equal(found["WT"], case["masks"][1])
    assert found.volumes_ml == case["results"].volumes_ml
    assert found.voxel_ml == pytest.approx(float(np.prod(SMALL_SPACING)) / 1000)
    with pytest.raises(KeyError, match="TC, WT, ET"):
        found["oedema"]


def test_another_series_or_not_a_seg_is_refused_with_the_reason(case: dict) -> None:
    flair = [pydicom.dcmread(p) for p in sorted(Path(case["info"].dicom_dirs["flair"]).glob("*.dcm"))]
    with pytest.raises(ValueError, match="the SEG was made on series"):
        seg_masks(case["results"].seg, volume_from_datasets(flair))
    with pytest.raises(ValueError, match="not a DICOM SEG"):
        seg_masks(case["results"].sr, volume_from_datasets(case["datasets"]))
