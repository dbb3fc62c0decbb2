"""Synthetic cases written in the BraTS 2021 folder layout, for training.

The layout is the one a research team downloads from the BraTS challenge::

    out_dir/
        <case>/<case>_t1.nii.gz   <case>_t1ce.nii.gz   <case>_t2.nii.gz
               <case>_flair.nii.gz   <case>_seg.nii.gz      (labels 0/1/2/4)

so ``neuronova train --data`` reads the demo cases and real BraTS through one
code path. Only NIfTI is written (no DICOM study): a training set of 40
cases on a 2 mm grid takes well under a minute. Demonstration data only:
not for clinical use.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .cases import _save_nifti
from .phantom import DEFAULT_APPEARANCE, Appearance, build_case
from .progress import Progress

logger = logging.getLogger(__name__)

#: Demo channel key → BraTS 2021 file suffix (BraTS calls the post-contrast T1 ``t1ce``).
BRATS_SUFFIX: dict[str, str] = {"t1": "t1", "t1c": "t1ce", "t2": "t2", "flair": "flair"}
#: Suffix of the label map.
LABEL_SUFFIX = "seg"
#: A 2 mm grid that holds the whole brain: what the demo model trains on.
TRAINING_SHAPE: tuple[int, int, int] = (96, 96, 80)
TRAINING_SPACING: tuple[float, float, float] = (2.0, 2.0, 2.0)


@dataclass(frozen=True)
class BratsCaseWritten:
    """One case written in the BraTS layout.

    Attributes
    ----------
    case_id : str
        Folder name, also the prefix of every file.
    directory : Path
    tumour_contrast : float
        The contrast the case was drawn with (low values are hard).
    """

    case_id: str
    directory: Path
    tumour_contrast: float


def brats_case_id(seed: int, index: int) -> str:
    """Folder name of synthetic case ``index`` of the set made with ``seed``."""
    return f"NeuroNova-s{seed}-{index:05d}"


def write_brats_cases(
    out_dir: str | Path,
    indices: range | list[int],
    seed: int = 0,
    shape: tuple[int, int, int] = TRAINING_SHAPE,
    spacing: tuple[float, float, float] = TRAINING_SPACING,
    *,
    appearance: Appearance = DEFAULT_APPEARANCE,
    skull_stripped: bool = True,
    progress: bool = False,
) -> list[BratsCaseWritten]:
    """Write synthetic cases ``indices`` of ``seed`` under ``out_dir`` in the BraTS layout.

    Parameters
    ----------
    out_dir : str or Path
        Destination folder (created); a case folder already there is replaced.
    indices : range or list of int
        Case numbers; with ``seed`` they fix each case (disjoint ranges give
        disjoint training, held-out and hard sets).
    seed : int
        Seed of the data set.
    shape, spacing : tuple
        Voxel grid; default 96 × 96 × 80 at 2 mm.
    appearance : Appearance
        Tumour contrast, noise and bias field ranges (a hard set uses fainter
        tumours, more noise and a stronger bias field).
    skull_stripped : bool
        As in BraTS (default true).
    progress : bool
        Show a progress line on stderr.

    Returns
    -------
    list of BratsCaseWritten
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    meter = Progress(len(indices), f"synthetic cases ({root.name})", enabled=progress)
    written = []
    try:
        for index in indices:
            case = build_case(seed, index, shape, spacing, skull_stripped=skull_stripped,
                              appearance=appearance)
            case_id = brats_case_id(seed, index)
            staging = root / f".{case_id}.partial"
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir()
            affine = case.grid.ras_affine
            for key, volume in case.channels.items():
                _save_nifti(volume, affine, staging / f"{case_id}_{BRATS_SUFFIX[key]}.nii.gz",
                            f"NeuroNova synthetic {key}")
            _save_nifti(case.labels, affine, staging / f"{case_id}_{LABEL_SUFFIX}.nii.gz",
                        "BraTS labels 1 NCR 2 ED 4 ET", labels=True)
            final = root / case_id
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
            written.append(BratsCaseWritten(case_id, final, case.tumour_contrast))
            meter.step(case_id)
    finally:
        meter.close()
    logger.info("wrote %d synthetic case(s) in the BraTS layout to %s", len(written), root)
    return written
