"""Training cases from the platform's own studies: images over DICOMweb, labels beside them.

A research team's labelled studies already live in the archive; their label
maps (BraTS values 0/1/2/4, on the T1 series' grid) are files kept beside
them, named after the study: ``LABELS/<StudyInstanceUID>_seg.nii.gz`` (or
``.nii``). :func:`export_studies` reads each study through ``neuronova_lib``
with the caller's own access (so every read is authorised and audited as
theirs, with the MLflow run id when one is active), checks that the label map
lies on the study's grid, and writes the case in the BraTS 2021 layout; the
training code then reads platform studies and a downloaded BraTS folder
through one path (:mod:`neuronova_lib.ai.dataset`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import EXTENSIONS, LABEL_SUFFIX, DatasetError

logger = logging.getLogger(__name__)

#: The platform's channel names → BraTS 2021 file suffixes, in the model's order.
CHANNEL_SUFFIX: dict[str, str] = {"t1": "t1", "t1c": "t1ce", "t2": "t2", "flair": "flair"}
#: How far (mm) the label map's affine may differ from the study's.
AFFINE_TOLERANCE_MM = 0.01


def label_file(labels: Path, study_uid: str) -> Path:
    """The label map of ``study_uid`` in ``labels``.

    Raises
    ------
    DatasetError
        When there is none, naming the file expected.
    """
    for extension in EXTENSIONS:
        candidate = labels / f"{study_uid}_{LABEL_SUFFIX}{extension}"
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"study {study_uid} has no label map in {labels}: expected "
        f"{study_uid}_{LABEL_SUFFIX}.nii.gz (BraTS values 0/1/2/4 on the T1 series' grid)")


def case_name(index: int, study_uid: str) -> str:
    """A short folder name (UIDs are long): ``platform-003-<last 8 digits of the UID>``."""
    return f"platform-{index:03d}-{study_uid.replace('.', '')[-8:]}"


def export_studies(client: Any, study_uids: Sequence[str], labels: str | Path,
                   out_dir: str | Path, progress: bool = False) -> Path:
    """Write each study with its label map as a BraTS-layout case below ``out_dir``.

    Parameters
    ----------
    client : neuronova_lib.dicomweb.Client
        Signed in as the user who trains (``neuronova_lib.connect()``).
    study_uids : sequence of str
    labels : path
        Folder of ``<StudyInstanceUID>_seg.nii.gz`` label maps.
    out_dir : path
        Where the case folders go (created).

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    DatasetError
        A study without its label map, a label map on another grid or with
        values other than 0/1/2/4, or no study at all; each names the study.
    """
    import nibabel as nib

    from ..volume import Volume

    if not study_uids:
        raise DatasetError("no studies given: name at least one StudyInstanceUID")
    labels = Path(labels)
    out = Path(out_dir)
    for uid in study_uids:  # every label map exists before the first study is read
        label_file(labels, uid)
    iterator: Any = study_uids
    if progress:
        from tqdm import tqdm

        iterator = tqdm(study_uids, desc="platform studies", unit="study")
    for index, uid in enumerate(iterator, start=1):
        volume = client.load_study(uid, progress=False)
        label_path = label_file(labels, uid)
        label = nib.load(str(label_path))
        values = np.asarray(label.dataobj)
        if values.shape != volume.spatial_shape:
            raise DatasetError(f"the label map {label_path} is {values.shape}, study {uid}'s "
                               f"T1 grid is {volume.spatial_shape}: save it on that grid")
        if np.abs(np.asarray(label.affine) - volume.affine_ras).max() > AFFINE_TOLERANCE_MM:
            raise DatasetError(f"the label map {label_path} lies elsewhere in space than study "
                               f"{uid} (affines differ): save it on the T1 series' grid")
        unknown = sorted(set(np.unique(values).tolist()) - {0, 1, 2, 4})
        if unknown:
            raise DatasetError(f"the label map {label_path} holds values {unknown}; BraTS "
                               "labels are 0, 1 (necrotic core), 2 (oedema), 4 (enhancing)")
        name = case_name(index, uid)
        case = out / name
        case.mkdir(parents=True, exist_ok=True)
        position = {channel: i for i, channel in enumerate(volume.channels)}
        for channel, suffix in CHANNEL_SUFFIX.items():
            if channel not in position:
                raise DatasetError(f"study {uid} has no {channel} series (it has "
                                   f"{list(volume.channels)}); every case needs "
                                   f"{list(CHANNEL_SUFFIX)}")
            Volume(array=volume.array[position[channel]], affine_lps=volume.affine_lps
                   ).to_nifti(case / f"{name}_{suffix}.nii.gz")
        nib.save(nib.Nifti1Image(values.astype(np.uint8), volume.affine_ras),
                 str(case / f"{name}_{LABEL_SUFFIX}.nii.gz"))
        logger.info("study %s → %s", uid, case)
    return out


__all__ = ["CHANNEL_SUFFIX", "case_name", "export_studies", "label_file"]
