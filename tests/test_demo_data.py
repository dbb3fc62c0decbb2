"""Synthetic BraTS-style demo data: DICOM files, NIfTI copies, labels and manifest.

Most tests use the small grid (64 × 64 × 40); one slow test builds a full
BraTS-size case. Geometry is checked against the DICOM standard's equation
written out here, not against the writer's own helpers.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from external_tools import tool
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage
from scipy import ndimage as ndi

from neuronova_lib.demo import (
    BRATS_SHAPE,
    BRATS_SPACING,
    CHANNELS,
    SMALL_SHAPE,
    SMALL_SPACING,
    build_case,
    case_identity,
    write_case,
    write_demo_cases,
)
from neuronova_lib.demo.cli import main

SEED = 7
CHANNEL_KEYS = [c.key for c in CHANNELS]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small cases written with SEED."""
    root = tmp_path_factory.mktemp("demo") / "set"
    write_demo_cases(root, cases=2, seed=SEED, shape=SMALL_SHAPE, spacing=SMALL_SPACING)
    return root


@pytest.fixture(scope="module")
def manifest(small_set: Path) -> dict:
    return json.loads((small_set / "manifest.json").read_text())


def read_series(directory: Path) -> list[pydicom.Dataset]:
    """Every instance of a series folder, in InstanceNumber order."""
    datasets = [pydicom.dcmread(p) for p in sorted(directory.glob("*.dcm"))]
    return sorted(datasets, key=lambda ds: int(ds.InstanceNumber))


def nifti_array(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    return np.asanyarray(image.dataobj), image.affine


def standard_patient_point(ds: pydicom.Dataset, row: int, column: int) -> np.ndarray:
    """PS3.3 C.7.6.2.1.1: P = S + c·Δc·X + r·Δr·Y (LPS mm)."""
    s = np.array(ds.ImagePositionPatient, dtype=float)
    x = np.array(ds.ImageOrientationPatient[:3], dtype=float)
    y = np.array(ds.ImageOrientationPatient[3:], dtype=float)
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    return s + column * column_spacing * x + row * row_spacing * y


def all_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- DICOM and NIfTI


def test_every_dicom_file_reads_back_and_equals_the_nifti_voxels(
    small_set: Path, manifest: dict
) -> None:
    for entry in manifest["cases"]:
        for key in CHANNEL_KEYS:
            series = read_series(small_set / entry["series"][key]["dicom_dir"])
            volume, _ = nifti_array(small_set / entry["series"][key]["nifti"])
            assert volume.dtype == np.uint16
            assert volume.shape == tuple(entry["shape"])
            assert len(series) == volume.shape[2]
            for k, ds in enumerate(series):
                assert ds.preamble == b"\x00" * 128
                assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
                assert ds.file_meta.MediaStorageSOPClassUID == MRImageStorage == ds.SOPClassUID
                assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
                assert int(ds.InstanceNumber) == k + 1
                pixels = ds.pixel_array
                assert pixels.dtype == np.uint16
                assert (ds.Rows, ds.Columns) == (volume.shape[1], volume.shape[0])
                np.testing.assert_array_equal(pixels, volume[:, :, k].T)
            assert 0 < volume.max() <= 4095


def test_written_arrays_are_the_built_case(small_set: Path) -> None:
    case = build_case(SEED, 1, SMALL_SHAPE, SMALL_SPACING)
    for key in CHANNEL_KEYS:
        volume, affine = nifti_array(small_set / "case-001" / f"{key}.nii.gz")
        np.testing.assert_array_equal(volume, case.channels[key])
        np.testing.assert_allclose(affine, case.grid.ras_affine)
    labels, _ = nifti_array(small_set / "case-001" / "labels.nii.gz")
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, case.labels)


def test_files_are_canonical_pydicom_part10(small_set: Path) -> None:
    """Re-encoding a file with pydicom gives the same bytes: nothing odd in the encoding."""
    for key in CHANNEL_KEYS:
        for path in sorted((small_set / "case-001" / "dicom" / key).glob("*.dcm"))[::13]:
            raw = path.read_bytes()
            assert raw[128:132] == b"DICM"
            out = io.BytesIO()
            pydicom.dcmread(io.BytesIO(raw)).save_as(out, enforce_file_format=True)
            assert out.getvalue() == raw, path


# ---------------------------------------------------------------- geometry


def test_slices_step_by_the_spacing_along_the_normal(small_set: Path) -> None:
    for key in CHANNEL_KEYS:
        series = read_series(small_set / "case-001" / "dicom" / key)
        iop = np.array(series[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        np.testing.assert_allclose(iop, [1, 0, 0, 0, 1, 0])
        positions = np.array([ds.ImagePositionPatient for ds in series], dtype=float)
        steps = np.diff(positions, axis=0)
        np.testing.assert_allclose(
            steps, np.tile(normal * SMALL_SPACING[2], (len(steps), 1)), atol=1e-4
        )
        for ds, pos in zip(series, positions, strict=True):
            assert list(map(float, ds.ImageOrientationPatient)) == list(iop)
            assert float(ds.SliceLocation) == pytest.approx(float(pos @ normal), abs=1e-4)
            assert float(ds.SliceThickness) == pytest.approx(SMALL_SPACING[2])
            assert float(ds.SpacingBetweenSlices) == pytest.approx(SMALL_SPACING[2])
            assert [float(v) for v in ds.PixelSpacing] == pytest.approx(
                [SMALL_SPACING[1], SMALL_SPACING[0]]
            )


def test_nifti_affine_and_dicom_put_each_voxel_at_the_same_patient_point(small_set: Path) -> None:
    rng = np.random.default_rng(0)
    for key in CHANNEL_KEYS:
        series = read_series(small_set / "case-002" / "dicom" / key)
        _, affine = nifti_array(small_set / "case-002" / f"{key}.nii.gz")
        shape = SMALL_SHAPE
        corners = [
            (i, j, k)
            for i in (0, shape[0] - 1)
            for j in (0, shape[1] - 1)
            for k in (0, shape[2] - 1)
        ]
        random = [tuple(int(rng.integers(n)) for n in shape) for _ in range(50)]
        for i, j, k in corners + random:
            ras = affine @ np.array([i, j, k, 1.0])
            lps_from_nifti = np.array([-ras[0], -ras[1], ras[2]])
            # NIfTI voxel (i, j, k) is DICOM slice k, row j, column i.
            lps_from_dicom = standard_patient_point(series[k], row=j, column=i)
            np.testing.assert_allclose(lps_from_nifti, lps_from_dicom, atol=1e-4)


def test_series_share_study_and_frame_of_reference(small_set: Path, manifest: dict) -> None:
    for entry in manifest["cases"]:
        firsts = [read_series(small_set / entry["series"][k]["dicom_dir"])[0] for k in CHANNEL_KEYS]
        assert len({ds.StudyInstanceUID for ds in firsts}) == 1
        assert len({ds.FrameOfReferenceUID for ds in firsts}) == 1
        assert len({ds.SeriesInstanceUID for ds in firsts}) == 4
        assert len({int(ds.SeriesNumber) for ds in firsts}) == 4
        assert len({ds.PatientID for ds in firsts}) == 1


# ---------------------------------------------------------------- identity and attributes


def test_dicom_attributes_identify_a_synthetic_mr_study(small_set: Path) -> None:
    identity = case_identity(SEED, 1)
    by_key = {k: read_series(small_set / "case-001" / "dicom" / k)[5] for k in CHANNEL_KEYS}
    for key, ds in by_key.items():
        assert str(ds.PatientName) == "DEMO^CASE001"
        assert ds.PatientID == identity.patient_id
        assert ds.PatientSex in ("F", "M")
        assert len(ds.PatientBirthDate) == 8 and ds.PatientBirthDate < ds.StudyDate
        assert ds.StudyDate == identity.study_date and ds.StudyTime == identity.study_time
        assert ds.StudyDescription == "Brain tumour MRI (synthetic demo)"
        assert ds.AccessionNumber and ds.StudyID
        assert ds.Modality == "MR" and ds.BodyPartExamined == "BRAIN"
        assert ds.Manufacturer == "NeuroNova synthetic"
        assert ds.MRAcquisitionType == "3D"
        assert float(ds.MagneticFieldStrength) == 3.0
        assert float(ds.RepetitionTime) > 0 and float(ds.EchoTime) > 0
        assert "NOT FOR CLINICAL USE" in ds.ImageComments
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SamplesPerPixel == 1
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (
            16,
            12,
            11,
            0,
        )
        assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == 0.0
        assert float(ds.WindowWidth) > 0
        assert ("ContrastBolusAgent" in ds) == (key == "t1c")
        assert ("InversionTime" in ds) == ("IR" in ds.ScanningSequence)
    assert "InversionTime" in by_key["flair"]
    descriptions = {ds.SeriesDescription for ds in by_key.values()}
    assert len(descriptions) == 4


def test_uids_are_valid_unique_and_short(small_set: Path) -> None:
    seen: set[str] = set()
    for path in sorted(small_set.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for uid in (
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
            ds.FrameOfReferenceUID,
            ds.file_meta.MediaStorageSOPInstanceUID,
        ):
            assert UID(uid).is_valid, uid
            assert len(uid) <= 64
        assert ds.SOPInstanceUID not in seen
        seen.add(ds.SOPInstanceUID)
    assert len(seen) == 2 * 4 * SMALL_SHAPE[2]


def test_manifest_matches_the_files(small_set: Path, manifest: dict) -> None:
    assert manifest["seed"] == SEED and manifest["synthetic"] is True
    assert [c["case_id"] for c in manifest["cases"]] == ["case-001", "case-002"]
    for entry in manifest["cases"]:
        assert sorted(entry["series"]) == sorted(CHANNEL_KEYS)
        assert entry["shape"] == list(SMALL_SHAPE)
        assert entry["spacing"] == pytest.approx(list(SMALL_SPACING))
        labels, affine = nifti_array(small_set / entry["labels"])
        np.testing.assert_allclose(affine, entry["ras_affine"])
        assert np.array(nib.load(small_set / entry["labels"]).header.get_zooms()) == pytest.approx(
            SMALL_SPACING
        )
        voxel_ml = np.prod(SMALL_SPACING) / 1000
        assert entry["label_volumes_ml"]["enhancing"] == pytest.approx(
            np.count_nonzero(labels == 4) * voxel_ml, abs=1e-3
        )
        for series in entry["series"].values():
            files = sorted((small_set / series["dicom_dir"]).glob("*.dcm"))
            assert len(files) == SMALL_SHAPE[2]
            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
            assert ds.StudyInstanceUID == entry["study_instance_uid"]
            assert ds.SeriesInstanceUID == series["series_instance_uid"]
            assert int(ds.SeriesNumber) == series["series_number"]
            assert ds.SeriesDescription == series["series_description"]
            assert ds.PatientID == entry["patient_id"]
            assert str(ds.PatientName) == entry["patient_name"]
            assert (small_set / series["nifti"]).is_file()


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_and_case_n_ignores_the_count(
    small_set: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    write_demo_cases(again, cases=1, seed=SEED, shape=SMALL_SHAPE, spacing=SMALL_SPACING)
    first = {k: v for k, v in all_files(small_set).items() if k.startswith("case-001/")}
    second = {k: v for k, v in all_files(again).items() if k.startswith("case-001/")}
    assert first.keys() == second.keys()
    assert len(first) == 4 * SMALL_SHAPE[2] + 5
    different = [name for name in first if first[name] != second[name]]
    assert different == []


def test_different_seed_gives_different_uids_and_images(small_set: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_demo_cases(other, cases=1, seed=SEED + 1, shape=SMALL_SHAPE, spacing=SMALL_SPACING)
    a = pydicom.dcmread(small_set / "case-001" / "dicom" / "t1" / "0020.dcm")
    b = pydicom.dcmread(other / "case-001" / "dicom" / "t1" / "0020.dcm")
    for attr in (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "FrameOfReferenceUID",
        "PatientID",
    ):
        assert getattr(a, attr) != getattr(b, attr), attr
    assert not np.array_equal(a.pixel_array, b.pixel_array)
    la, _ = nifti_array(small_set / "case-001" / "labels.nii.gz")
    lb, _ = nifti_array(other / "case-001" / "labels.nii.gz")
    assert not np.array_equal(la, lb)


# ---------------------------------------------------------------- anatomy and tumour


@pytest.fixture(scope="module")
def small_cases() -> list:
    return [
        build_case(seed, index, SMALL_SHAPE, SMALL_SPACING)
        for seed in (0, 1, 2)
        for index in (1, 2)
    ]


def test_labels_have_three_compartments_with_rim_around_core_inside_brain(
    small_cases: list,
) -> None:
    for case in small_cases:
        labels = case.labels
        assert set(np.unique(labels)) == {0, 1, 2, 4}
        necrotic = labels == 1
        neighbourhood = ndi.binary_dilation(necrotic, structure=np.ones((3, 3, 3), bool))
        # Every neighbour of the necrotic core is core or enhancing rim: the rim encloses it.
        assert set(np.unique(labels[neighbourhood])) <= {1, 4}
        assert np.all(case.brain_mask[labels > 0])
        # The tumour is a single blob, not scattered voxels.
        _, n_core = ndi.label((labels == 1) | (labels == 4), structure=np.ones((3, 3, 3)))
        assert n_core == 1


def test_oedema_lies_mostly_in_white_matter() -> None:
    case = build_case(3, 1, SMALL_SHAPE, SMALL_SPACING)
    from neuronova_lib.demo.anatomy import sample_anatomy

    normal = sample_anatomy(case.grid)  # tissue before the tumour displaced it
    oedema = case.labels == 2
    assert normal["wm"][oedema].mean() > normal["gm"][oedema].mean()


def _mean(volume: np.ndarray, mask: np.ndarray) -> float:
    assert mask.sum() >= 20, "too few voxels for a mean"
    return float(volume[mask].mean())


def test_channel_contrasts_are_ordered_like_real_mr(small_cases: list) -> None:
    for case in small_cases:
        t, healthy = case.tissues, case.labels == 0
        csf = (t["csf"] > 0.7) & case.brain_mask & healthy
        wm = (t["wm"] > 0.8) & healthy
        gm = (t["gm"] > 0.7) & healthy
        ch = {k: v.astype(float) for k, v in case.channels.items()}
        assert _mean(ch["t1"], wm) > _mean(ch["t1"], gm) > _mean(ch["t1"], csf)
        assert _mean(ch["t2"], csf) > _mean(ch["t2"], gm) > _mean(ch["t2"], wm)
        assert _mean(ch["flair"], csf) < _mean(ch["flair"], wm)
        assert _mean(ch["flair"], case.labels == 2) > _mean(ch["flair"], wm)
        enhancing = case.labels == 4
        # Gadolinium: the rim gains signal relative to white matter on T1c, not on T1.
        t1_ratio = _mean(ch["t1"], enhancing) / _mean(ch["t1"], wm)
        t1c_ratio = _mean(ch["t1c"], enhancing) / _mean(ch["t1c"], wm)
        assert t1c_ratio > t1_ratio
        assert 0.25 <= case.tumour_contrast <= 1.0


def test_skull_stripped_case_has_no_head_outside_the_brain() -> None:
    with_skull = build_case(4, 1, SMALL_SHAPE, SMALL_SPACING)
    stripped = build_case(4, 1, SMALL_SHAPE, SMALL_SPACING, skull_stripped=True)
    outside = ~ndi.binary_dilation(with_skull.brain_mask, iterations=2)
    scalp = outside & (with_skull.tissues["scalp"] > 0.5)
    assert _mean(with_skull.channels["t1"].astype(float), scalp) > 1000
    assert _mean(stripped.channels["t1"].astype(float), scalp) < 200
    np.testing.assert_array_equal(with_skull.labels, stripped.labels)


# ---------------------------------------------------------------- errors, CLI, validator


def test_bad_arguments_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        build_case(-1, 1, SMALL_SHAPE, SMALL_SPACING)
    with pytest.raises(ValueError, match="cases"):
        write_demo_cases(tmp_path / "x", cases=0)
    with pytest.raises(ValueError, match="spacing"):
        build_case(0, 1, SMALL_SHAPE, (0.0, 1.0, 1.0))


def test_existing_data_is_kept_unless_overwrite(small_set: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy"
    shutil.copytree(small_set, target)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_demo_cases(target, cases=1, seed=SEED, shape=SMALL_SHAPE, spacing=SMALL_SPACING)
    write_demo_cases(
        target, cases=1, seed=SEED, shape=SMALL_SHAPE, spacing=SMALL_SPACING, overwrite=True
    )
    assert not (target / "case-002").exists()  # stale case removed with the old manifest
    assert len(json.loads((target / "manifest.json").read_text())["cases"]) == 1
    assert not list(target.glob(".*partial"))


def test_cli_writes_cases_and_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "cli"
    args = ["--cases", "1", "--out", str(out), "--seed", "3", "--size", "small", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "wrote 1 synthetic case" in printed and "not for clinical use" in printed
    assert (out / "manifest.json").is_file()
    assert len(list((out / "case-001" / "dicom" / "flair").glob("*.dcm"))) == SMALL_SHAPE[2]
    assert main(args) == 2  # folder in the way, no --overwrite
    assert "overwrite" in capsys.readouterr().err


@pytest.mark.e2e  # starts processes
def test_dciodvfy_reports_no_errors(small_set: Path) -> None:
    dciodvfy = tool("dciodvfy", "dicom3tools")
    for key in CHANNEL_KEYS:
        path = small_set / "case-001" / "dicom" / key / "0020.dcm"
        result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        report = (result.stdout + result.stderr).splitlines()
        assert report and "MRImage" in report[0], report
        errors = [line for line in report if line.lstrip().lower().startswith("error")]
        assert errors == [], f"{key}: {errors}"


# ---------------------------------------------------------------- full size


@pytest.mark.slow
def test_full_size_case_is_the_template_in_the_right_place(tmp_path: Path) -> None:
    from nilearn import datasets

    case = build_case(11, 1)
    info = write_case(case, tmp_path / "full")
    assert info.shape == BRATS_SHAPE and info.spacing == BRATS_SPACING
    t1c, affine = nifti_array(info.nifti["t1c"])
    assert t1c.shape == BRATS_SHAPE
    series = read_series(info.dicom_dirs["t1c"])
    assert len(series) == BRATS_SHAPE[2]
    for k in (0, 77, 154):
        np.testing.assert_array_equal(series[k].pixel_array, t1c[:, :, k].T)

    # 1 mm grids copy template voxels exactly: the brain mask read back through the
    # NIfTI affine must be the template's own mask at the same RAS point. An
    # anterior-posterior or superior-inferior flip or shift would break this. (nilearn's
    # MNI152 templates are exactly left-right symmetric, so left-right rests on the
    # NIfTI-versus-DICOM patient-point test above.)
    template = datasets.load_mni152_brain_mask(resolution=1)
    mask = np.asanyarray(template.dataobj) > 0
    to_template = np.linalg.inv(template.affine) @ affine
    ijk = np.indices(BRATS_SHAPE).reshape(3, -1)
    t_ijk = np.rint(to_template[:3, :3] @ ijk + to_template[:3, 3:4]).astype(int)
    inside = np.all((t_ijk >= 0) & (t_ijk < np.array(mask.shape)[:, None]), axis=0)
    expected = np.zeros(ijk.shape[1], bool)
    expected[inside] = mask[tuple(t_ijk[:, inside])]
    np.testing.assert_array_equal(case.brain_mask.reshape(-1), expected)
    assert expected.sum() > 1_000_000
