"""Synthetic BraTS-style brain-tumour MRI, written as real DICOM (and NIfTI beside it).

NeuroNova has no patient data and can download no model weights, so it makes
its own demo data: a brain from nilearn's MNI152 templates, a synthetic
glioma (necrotic core, enhancing rim, oedema), four MR contrasts (T1, T1c,
T2, FLAIR), written as one DICOM study per case, with the ground-truth label
map and the same voxels as NIfTI for training. Demonstration data only: not
for clinical use.

Modules, by what they hold:

* :mod:`.geometry` — voxel grid, LPS/RAS conventions, DICOM patient points.
* :mod:`.channels` — the four channels: tissue contrasts and MR sequences.
* :mod:`.anatomy` — tissue fractions from the MNI152 templates.
* :mod:`.fields` — smooth random fields (tumour shape, bias field).
* :mod:`.tumour` — the tumour's compartments and BraTS labels.
* :mod:`.phantom` — one case in memory (:func:`build_case`).
* :mod:`.identity` — patient, study, dates and UIDs derived from the seed.
* :mod:`.dicom_writer` — one case as a DICOM study.
* :mod:`.cases` — a data set on disk with its manifest (:func:`write_demo_cases`).
* :mod:`.cli` — ``neuronova demo-data``.
"""

from .cases import CaseInfo, write_case, write_demo_cases
from .channels import CHANNELS, ChannelSpec
from .geometry import Grid
from .identity import CaseIdentity, case_identity
from .phantom import (
    DEFAULT_APPEARANCE,
    Appearance,
    BRATS_SHAPE,
    BRATS_SPACING,
    SIZES,
    SMALL_SHAPE,
    SMALL_SPACING,
    SyntheticCase,
    build_case,
)
from .tumour import LABEL_ENHANCING, LABEL_NECROTIC, LABEL_OEDEMA

__all__ = [
    "Appearance",
    "DEFAULT_APPEARANCE",
    "BRATS_SHAPE",
    "BRATS_SPACING",
    "CHANNELS",
    "CaseIdentity",
    "CaseInfo",
    "ChannelSpec",
    "Grid",
    "LABEL_ENHANCING",
    "LABEL_NECROTIC",
    "LABEL_OEDEMA",
    "SIZES",
    "SMALL_SHAPE",
    "SMALL_SPACING",
    "SyntheticCase",
    "build_case",
    "case_identity",
    "write_case",
    "write_demo_cases",
]
