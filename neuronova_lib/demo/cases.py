"""Write a set of synthetic cases to disk: DICOM study, NIfTI channels, labels, manifest.

Layout of ``out_dir``::

    manifest.json
    case-001/
        dicom/t1/0001.dcm … dicom/t1c/… dicom/t2/… dicom/flair/…
        t1.nii.gz  t1c.nii.gz  t2.nii.gz  flair.nii.gz   (uint16, = DICOM pixel data)
        labels.nii.gz                                    (uint8, BraTS labels 0/1/2/4)
    case-002/ …

Each case is written into a hidden staging folder and renamed into place
when complete, so an interrupted run never leaves a half-written case under
its final name.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .. import __version__
from .channels import CHANNELS, CHANNELS_BY_KEY
from .dicom_writer import BITS_STORED, SYNTHETIC_NOTE, write_case_dicom
from .identity import case_identity
from .phantom import BRATS_SHAPE, BRATS_SPACING, SyntheticCase, build_case
from .progress import Progress
from .tumour import LABEL_ENHANCING, LABEL_NECROTIC, LABEL_OEDEMA

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
LABELS_NAME = "labels.nii.gz"
_CASE_DIR = re.compile(r"^case-\d{3,}$")
_NIFTI_SCANNER_ANAT = 1


@dataclass(frozen=True)
class CaseInfo:
    """What was written for one case (also its entry in ``manifest.json``).

    Attributes
    ----------
    case_id : str
        Folder name, ``case-001``.
    index : int
        Case number within the data set.
    directory : Path
        The case's folder.
    patient_id, patient_name : str
    study_instance_uid : str
    series_instance_uids : Mapping[str, str]
        Channel key → SeriesInstanceUID.
    dicom_dirs : Mapping[str, Path]
        Channel key → folder of that series' files.
    nifti : Mapping[str, Path]
        Channel key → NIfTI file holding the same voxels as the DICOM series.
    labels : Path
        Ground-truth label map (NIfTI, uint8).
    shape : tuple of int
    spacing : tuple of float
    ras_affine : tuple of tuple of float
        The NIfTI affine (4×4, RAS mm).
    tumour_contrast : float
        Tumour contrast factor (0.25 faint … 1 nominal); low values make a hard set.
    label_volumes_ml : Mapping[str, float]
        Volume of each tumour compartment.
    """

    case_id: str
    index: int
    directory: Path
    patient_id: str
    patient_name: str
    study_instance_uid: str
    series_instance_uids: Mapping[str, str]
    dicom_dirs: Mapping[str, Path]
    nifti: Mapping[str, Path]
    labels: Path
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    ras_affine: tuple[tuple[float, ...], ...]
    tumour_contrast: float
    label_volumes_ml: Mapping[str, float]

    def manifest_entry(self, root: Path) -> dict[str, Any]:
        """JSON-ready description, with paths relative to ``root``."""

        def rel(path: Path) -> str:
            return path.relative_to(root).as_posix()

        return {
            "case_id": self.case_id,
            "index": self.index,
            "patient_id": self.patient_id,
            "patient_name": self.patient_name,
            "study_instance_uid": self.study_instance_uid,
            "series": {
                key: {
                    "series_instance_uid": self.series_instance_uids[key],
                    "series_number": CHANNELS_BY_KEY[key].series_number,
                    "series_description": CHANNELS_BY_KEY[key].series_description,
                    "dicom_dir": rel(self.dicom_dirs[key]),
                    "nifti": rel(self.nifti[key]),
                }
                for key in self.series_instance_uids
            },
            "labels": rel(self.labels),
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "ras_affine": [list(row) for row in self.ras_affine],
            "tumour_contrast": round(self.tumour_contrast, 4),
            "label_volumes_ml": dict(self.label_volumes_ml),
        }


def write_demo_cases(
    out_dir: str | Path,
    cases: int = 5,
    seed: int = 0,
    shape: tuple[int, int, int] = BRATS_SHAPE,
    spacing: tuple[float, float, float] = BRATS_SPACING,
    *,
    skull_stripped: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> list[CaseInfo]:
    """Write ``cases`` synthetic brain-tumour cases and a manifest under ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Destination folder; created if missing.
    cases : int
        Number of cases, numbered ``case-001`` … ``case-NNN``.
    seed : int
        Non-negative seed: the same seed (and shape, spacing) writes
        byte-identical files; case ``n`` is the same whatever ``cases`` is.
    shape, spacing : tuple
        Voxel grid ``(columns, rows, slices)`` and voxel size in mm; the
        default is the BraTS grid (240 × 240 × 155 at 1 mm), see
        :data:`~neuronova_lib.demo.phantom.SIZES` for named sizes.
    skull_stripped : bool
        Leave out skull and scalp, as in BraTS challenge data.
    overwrite : bool
        Replace case folders and a manifest that already exist in ``out_dir``.
    progress : bool
        Show a progress line on stderr (tqdm when installed).

    Returns
    -------
    list of CaseInfo
        One per case, in order; the same data as ``manifest.json``.

    Raises
    ------
    ValueError
        For a non-positive number of cases, a negative seed or a bad grid.
    FileExistsError
        When ``out_dir`` already holds demo cases or a manifest and
        ``overwrite`` is false.
    """
    if isinstance(cases, bool) or not isinstance(cases, int) or cases < 1:
        raise ValueError(f"cases must be a positive integer, got {cases!r}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    _clear_previous(root, cases, overwrite)
    meter = Progress(cases, "demo cases", enabled=progress)
    written = []
    try:
        for index in range(1, cases + 1):
            started = time.perf_counter()
            case = build_case(seed, index, shape, spacing, skull_stripped=skull_stripped)
            written.append(write_case(case, root))
            logger.info("wrote %s in %.1f s", written[-1].case_id, time.perf_counter() - started)
            meter.step(written[-1].case_id)
    finally:
        meter.close()
    _write_manifest(root, seed, skull_stripped, written)
    return written


def write_case(case: SyntheticCase, root: str | Path) -> CaseInfo:
    """Write one built case under ``root/case-NNN`` (replacing that folder if present).

    Parameters
    ----------
    case : SyntheticCase
        From :func:`~neuronova_lib.demo.phantom.build_case`.
    root : str or Path
        Data set folder.

    Returns
    -------
    CaseInfo
    """
    root = Path(root)
    identity = case_identity(case.seed, case.index)
    final = root / identity.case_id
    staging = root / f".{identity.case_id}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    write_case_dicom(case, identity, staging / "dicom")
    affine = case.grid.ras_affine
    for key, volume in case.channels.items():
        _save_nifti(volume, affine, staging / f"{key}.nii.gz", f"NeuroNova synthetic {key}")
    _save_nifti(
        case.labels, affine, staging / LABELS_NAME, "BraTS labels 1 NCR 2 ED 4 ET", labels=True
    )
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    return CaseInfo(
        case_id=identity.case_id,
        index=case.index,
        directory=final,
        patient_id=identity.patient_id,
        patient_name=identity.patient_name,
        study_instance_uid=identity.study_instance_uid,
        series_instance_uids={c.key: identity.series_instance_uid(c.key) for c in CHANNELS},
        dicom_dirs={c.key: final / "dicom" / c.key for c in CHANNELS},
        nifti={c.key: final / f"{c.key}.nii.gz" for c in CHANNELS},
        labels=final / LABELS_NAME,
        shape=case.grid.shape,
        spacing=case.grid.spacing,
        ras_affine=tuple(tuple(float(v) for v in row) for row in affine),
        tumour_contrast=case.tumour_contrast,
        label_volumes_ml=case.label_volumes_ml(),
    )


def _save_nifti(
    array: np.ndarray, affine: np.ndarray, path: Path, description: str, labels: bool = False
) -> None:
    """NIfTI-1 file holding ``array`` unscaled, in its own dtype, with qform = sform = affine."""
    image = nib.Nifti1Image(array, affine)
    header = image.header
    header.set_data_dtype(array.dtype)
    header.set_xyzt_units("mm")
    header["descrip"] = description.encode("ascii")[:79]
    if labels:
        header.set_intent("label")
    image.set_qform(affine, code=_NIFTI_SCANNER_ANAT)
    image.set_sform(affine, code=_NIFTI_SCANNER_ANAT)
    nib.save(image, path)


def _clear_previous(root: Path, cases: int, overwrite: bool) -> None:
    """Refuse, or remove, what an earlier run left in ``root``."""
    manifest = root / MANIFEST_NAME
    existing = sorted(p.name for p in root.iterdir() if p.is_dir() and _CASE_DIR.match(p.name))
    if not existing and not manifest.exists():
        return
    if not overwrite:
        raise FileExistsError(
            f"{root} already holds demo data ({', '.join(existing[:3]) or MANIFEST_NAME}"
            f"{' …' if len(existing) > 3 else ''}); choose an empty folder or pass "
            "overwrite=True (--overwrite on the command line) to replace it"
        )
    for name in existing:  # stale cases would not match the new manifest
        shutil.rmtree(root / name)
    manifest.unlink(missing_ok=True)
    logger.info("removed %d earlier case folder(s) from %s", len(existing), root)


def _write_manifest(root: Path, seed: int, skull_stripped: bool, cases: list[CaseInfo]) -> Path:
    """``manifest.json``: every case with its UIDs and files (no timestamps: reproducible)."""
    document = {
        "generator": "neuronova_lib.demo",
        "version": __version__,
        "synthetic": True,
        "note": SYNTHETIC_NOTE,
        "seed": seed,
        "skull_stripped": skull_stripped,
        "pixel_format": {
            "dtype": "uint16",
            "bits_stored": BITS_STORED,
            "range": [0, 4095],
            "array_layout": "vol[i, j, k]: i -> patient left, j -> posterior, k -> superior; "
            "DICOM slice k pixel array (Rows x Columns) = vol[:, :, k].T",
        },
        "labels": {
            str(LABEL_NECROTIC): "necrotic tumour core",
            str(LABEL_OEDEMA): "peritumoural oedema",
            str(LABEL_ENHANCING): "enhancing tumour",
        },
        "channels": [c.key for c in CHANNELS],
        "cases": [c.manifest_entry(root) for c in cases],
    }
    path = root / MANIFEST_NAME
    staging = root / f".{MANIFEST_NAME}.partial"
    staging.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(staging, path)
    return path
