"""The SEG and SR writers (neuronova_lib.ai.results) on a synthetic case's ground truth.

The masks are the case's own labels: that tests the writers, not a model. Referees:
highdicom reads both back, dciodvfy (dicom3tools) checks them against the standard.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from external_tools import tool
from neuronova_lib.ai.results import (
    NOT_FOR_CLINICAL_USE,
    REGIONS,
    ModelInfo,
    build_results,
    result_uids,
    to_bytes,
)
from neuronova_lib.demo import SMALL_SHAPE, SMALL_SPACING, write_demo_cases
from neuronova_lib.volume import instances_json, series_geometry

MODEL = ModelInfo("brain-tumor-seg", "3", "0123456789abcdef")
CREATED = dt.datetime(2026, 12, 7, 2, 30, 5, tzinfo=dt.UTC)


def brats_regions(labels: np.ndarray) -> np.ndarray:
    """TC, WT, ET from BraTS labels 1 (necrosis), 2 (oedema), 4 (enhancing)."""
    return np.stack([(labels == 1) | (labels == 4), labels > 0, labels == 4])


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("results-case")
    info = write_demo_cases(root, cases=1, seed=11, shape=SMALL_SHAPE, spacing=SMALL_SPACING)[0]
    files = sorted(Path(info.dicom_dirs["t1"]).glob("*.dcm"))
    # Shuffled, and without pixel data: the writers must order slices themselves and
    # need only the attributes (the inference job reads WADO-RS metadata).
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in files[::-1]]
    labels = np.asarray(nib.load(info.labels).dataobj)
    masks = brats_regions(labels)
    assert masks[2].any() and masks[0].sum() > masks[2].sum()  # a real tumour with a core
    return {"info": info, "sources": sources, "masks": masks, "dir": root}


@pytest.fixture(scope="module")
def written(case: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    results = build_results(case["sources"], case["masks"], model=MODEL, job_id="job-1",
                            created=CREATED)
    out = tmp_path_factory.mktemp("results-out")
    seg_path, sr_path = out / "seg.dcm", out / "sr.dcm"
    seg_path.write_bytes(to_bytes(results.seg))
    sr_path.write_bytes(to_bytes(results.sr))
    return {"results": results, "seg": seg_path, "sr": sr_path}


def _dciodvfy(path: Path) -> list[str]:
    done = subprocess.run([tool("dciodvfy", "dicom3tools"), str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    return (done.stdout + done.stderr).splitlines()


@pytest.mark.e2e  # starts dciodvfy
def test_dciodvfy_accepts_both(written: dict) -> None:
    for name, iod in (("seg", "Segmentation"), ("sr", "Comprehensive3DSR")):
        report = _dciodvfy(written[name])
        assert report and iod in report[0], report
        errors = [line for line in report if line.lstrip().lower().startswith("error")]
        assert errors == [], f"{name}: {errors}"


def test_segments_equal_the_ground_truth_voxel_for_voxel(case: dict, written: dict) -> None:
    seg = hd.seg.segread(written["seg"])
    assert seg.get_segment_numbers() == [1, 2, 3]
    assert seg.SegmentationType == "BINARY"
    geometry = series_geometry(instances_json(case["sources"]))
    slice_uids = [s.sop_uid for s in geometry.slices]
    # All of the source's slices, in k order; highdicom returns (slices, rows, columns, segments).
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=slice_uids, segment_numbers=[1, 2, 3],
        ignore_spatial_locations=True, assert_missing_frames_are_empty=True)
    assert np.array_equal(pixels.transpose(3, 2, 1, 0).astype(bool), case["masks"])
    # And the SEG's frames name exactly the slices where the ground truth has the region.
    for number, region in enumerate(REGIONS, start=1):
        mask = case["masks"][number - 1]
        truth = {slice_uids[k] for k in np.flatnonzero(mask.any(axis=(0, 1)))}
        framed = {
            str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
            for frame in seg.PerFrameFunctionalGroupsSequence
            if int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == number
        }
        assert framed == truth, region


def test_codes_labels_and_the_not_clinical_notice(written: dict) -> None:
    seg = pydicom.dcmread(written["seg"])
    sr = pydicom.dcmread(written["sr"])
    types = [(s.SegmentLabel, s.SegmentedPropertyTypeCodeSequence[0].CodeValue,
              s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator,
              s.SegmentAlgorithmType, s.SegmentAlgorithmName)
             for s in seg.SegmentSequence]
    assert types == [
        ("TC tumour core", "108369006", "SCT", "AUTOMATIC", "brain-tumor-seg"),
        ("WT whole tumour", "301766008", "SCT", "AUTOMATIC", "brain-tumor-seg"),
        ("ET enhancing tumour", "C113842", "NCIt", "AUTOMATIC", "brain-tumor-seg"),
    ]
    for ds in (seg, sr):
        assert "NOT FOR CLINICAL USE" in ds.SeriesDescription.upper() \
            or "NOT CLINICAL" in ds.SeriesDescription.upper()
    assert seg.ContentLabel == "NOT_FOR_CLINICAL"
    assert "not for clinical use" in seg.ContentDescription
    assert written["results"].notes[0] == NOT_FOR_CLINICAL_USE


def test_sr_volumes_are_the_seg_voxel_counts_times_the_voxel_volume(case: dict,
                                                                   written: dict) -> None:
    seg = hd.seg.segread(written["seg"])
    sr = hd.sr.srread(written["sr"])
    spacing = SMALL_SPACING
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    geometry = series_geometry(instances_json(case["sources"]))
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[s.sop_uid for s in geometry.slices],
        segment_numbers=[1, 2, 3], ignore_spatial_locations=True)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier.split()[0] for g in groups] == list(REGIONS)
    results = written["results"]
    for number, group in enumerate(groups, start=1):
        region = REGIONS[number - 1]
        (measurement,) = group.get_measurements()
        assert (measurement.name.value, measurement.unit.value) == ("118565006", "ml")
        count = int(pixels[..., number - 1].sum())
        assert count == results.voxel_counts[region] == int(case["masks"][number - 1].sum())
        assert measurement.value == pytest.approx(round(count * voxel_ml, 6), abs=1e-9)
        assert measurement.value == results.volumes_ml[region]
        # The reference: this SEG, this segment, and the series it was drawn on.
        ref = group.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert ref.referenced_segment_numbers == [number]
    # Volumes from the labels themselves (the demo's own figures, 3 decimals).
    info = case["info"]
    assert results.volumes_ml["ET"] == pytest.approx(info.label_volumes_ml["enhancing"], abs=1e-3)


def test_references_point_at_the_source_series_and_the_seg(case: dict, written: dict) -> None:
    seg = pydicom.dcmread(written["seg"])
    sr = pydicom.dcmread(written["sr"])
    source = case["sources"][0]
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == source.StudyInstanceUID
    assert seg.PatientID == sr.PatientID == source.PatientID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [source.SeriesInstanceUID]
    evidence = {series.SeriesInstanceUID:
                {i.ReferencedSOPInstanceUID for i in series.ReferencedSOPSequence}
                for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence}
    assert evidence[seg.SeriesInstanceUID] == {seg.SOPInstanceUID}
    assert evidence[source.SeriesInstanceUID] == {str(ds.SOPInstanceUID) for ds in case["sources"]}
    uids = result_uids("job-1")
    assert (seg.SeriesInstanceUID, seg.SOPInstanceUID, sr.SeriesInstanceUID, sr.SOPInstanceUID) == (
        uids.seg_series, uids.seg_instance, uids.sr_series, uids.sr_instance)


def test_the_same_job_writes_the_same_bytes_and_another_job_other_uids(case: dict,
                                                                       written: dict) -> None:
    again = build_results(case["sources"], case["masks"], model=MODEL, job_id="job-1",
                          created=CREATED)
    assert to_bytes(again.seg) == written["seg"].read_bytes()
    assert to_bytes(again.sr) == written["sr"].read_bytes()
    other = result_uids("job-2")
    assert other.seg_instance != again.uids.seg_instance and other.sr_series != again.uids.sr_series


@pytest.mark.e2e  # starts dciodvfy
def test_an_empty_region_is_written_with_volume_zero(case: dict, tmp_path: Path) -> None:
    masks = case["masks"].copy()
    masks[2] = False  # a model that finds no enhancing tumour
    results = build_results(case["sources"], masks, model=MODEL, job_id="job-empty",
                            created=CREATED)
    assert results.volumes_ml["ET"] == 0.0 and results.voxel_counts["ET"] == 0
    assert "ET: no voxels found" in results.notes
    for name, ds in (("seg", results.seg), ("sr", results.sr)):
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(to_bytes(ds))
        errors = [line for line in _dciodvfy(path) if line.lstrip().lower().startswith("error")]
        assert errors == [], f"{name}: {errors}"
    sr = hd.sr.srread(tmp_path / "sr.dcm")
    assert sr.content.get_volumetric_roi_measurement_groups()[2].get_measurements()[0].value == 0


def test_masks_off_the_source_grid_are_refused(case: dict) -> None:
    with pytest.raises(ValueError, match="source series' grid"):
        build_results(case["sources"], case["masks"][:, :-1], model=MODEL, job_id="j",
                      created=CREATED)
    with pytest.raises(ValueError, match="bool"):
        build_results(case["sources"], case["masks"].astype(np.uint8), model=MODEL, job_id="j",
                      created=CREATED)
