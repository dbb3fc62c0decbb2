"""MONAI dictionary transforms: from BraTS-layout files to the network's tensors.

One preprocessing for training, evaluation and inference, read from the
:class:`~neuronova_lib.ai.model_config.ModelConfig`: channels concatenated in
the model's order, labels turned into the three overlapping BraTS regions
(TC = 1+4, WT = 1+2+4, ET = 4), axes oriented as the model expects, voxels
resampled to its grid, each channel normalised over its non-zero voxels.
Training adds random patches centred on tumour or background and light
intensity and flip augmentation.
"""

from __future__ import annotations

from typing import Any

from .model_config import ModelConfig

IMAGE = "image"
LABEL = "label"


def _preprocessing(config: ModelConfig) -> list[Any]:
    from monai.transforms import (
        ConcatItemsd,
        ConvertToMultiChannelBasedOnBratsClassesd,
        DeleteItemsd,
        EnsureChannelFirstd,
        EnsureTyped,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        Spacingd,
    )

    channels = list(config.channels)
    return [
        LoadImaged(keys=[*channels, LABEL], image_only=True),
        EnsureChannelFirstd(keys=[*channels, LABEL]),
        ConcatItemsd(keys=channels, name=IMAGE, dim=0),
        DeleteItemsd(keys=channels),
        ConvertToMultiChannelBasedOnBratsClassesd(keys=LABEL),
        Orientationd(keys=[IMAGE, LABEL], axcodes=config.orientation),
        Spacingd(keys=[IMAGE, LABEL], pixdim=config.spacing_mm, mode=("bilinear", "nearest")),
        NormalizeIntensityd(keys=IMAGE, nonzero=True, channel_wise=True),
        EnsureTyped(keys=[IMAGE, LABEL], dtype="float32", track_meta=True),
    ]


def evaluation_transforms(config: ModelConfig) -> Any:
    """Whole cases on the model's grid: ``image`` (C, X, Y, Z) and ``label`` (3, X, Y, Z)."""
    from monai.transforms import Compose

    return Compose(_preprocessing(config))


def training_transforms(config: ModelConfig, seed: int) -> Any:
    """:func:`evaluation_transforms` plus random patches and augmentation, seeded.

    Patches are ``config.roi_size`` voxels, half of them centred on tumour
    (small tumours would otherwise be rare in the batches), half anywhere
    else (so that the network also learns what is not tumour).
    """
    from monai.transforms import (
        Compose,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

    pipeline = Compose(
        [
            *_preprocessing(config),
            SpatialPadd(keys=[IMAGE, LABEL], spatial_size=config.roi_size),
            RandCropByPosNegLabeld(
                keys=[IMAGE, LABEL], label_key=LABEL, spatial_size=config.roi_size,
                pos=1, neg=1, num_samples=1,
            ),
            RandFlipd(keys=[IMAGE, LABEL], prob=0.5, spatial_axis=0),
            RandScaleIntensityd(keys=IMAGE, factors=0.1, prob=0.5),
            RandShiftIntensityd(keys=IMAGE, offsets=0.1, prob=0.5),
        ]
    )
    pipeline.set_random_state(seed=seed)
    return pipeline
