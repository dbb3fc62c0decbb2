"""What a trained model needs at inference, and the network it describes.

The same :class:`ModelConfig` is a training run's tag ``neuronova.model_config``
(JSON) and the model's MLflow metadata, so inference never guesses the
channel order, the grid or the threshold the model was trained with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: Input channels, in the network's order (BraTS 2021 file suffixes).
CHANNELS: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
#: Output regions: tumour core (labels 1+4), whole tumour (1+2+4), enhancing tumour (4).
REGIONS: tuple[str, ...] = ("TC", "WT", "ET")
#: MLflow run tag holding the JSON of :class:`ModelConfig`.
CONFIG_TAG = "neuronova.model_config"
#: Registered model name used when none is given.
DEFAULT_MODEL_NAME = "brain-tumor-seg"


@dataclass(frozen=True)
class ModelConfig:
    """Network hyper-parameters and the pre/post-processing inference must repeat.

    Attributes
    ----------
    channels : tuple of str
        Input channel order.
    regions : tuple of str
        Output channel order (sigmoid each, regions overlap).
    spacing_mm : tuple of float
        The grid the network works on; inputs are resampled to it.
    orientation : str
        Array axis directions the network was trained on (``LPS``: i → left,
        j → posterior, k → superior; BraTS NIfTI and NeuroNova's DICOM volumes).
    roi_size : tuple of int
        Training patch and sliding-window size (voxels).
    sw_overlap : float
        Sliding-window overlap.
    normalisation : str
        ``nonzero_channelwise_zscore``: per channel, zero mean and unit
        variance over the non-zero voxels (MONAI ``NormalizeIntensity``).
    threshold : float
        Sigmoid probability above which a voxel belongs to a region.
    network : dict
        ``monai.networks.nets.UNet`` arguments (channels, strides, res units).
    """

    channels: tuple[str, ...] = CHANNELS
    regions: tuple[str, ...] = REGIONS
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    orientation: str = "LPS"
    roi_size: tuple[int, int, int] = (64, 64, 64)
    sw_overlap: float = 0.25
    normalisation: str = "nonzero_channelwise_zscore"
    threshold: float = 0.5
    network: Mapping[str, Any] = field(
        default_factory=lambda: {
            "name": "UNet",
            "channels": [16, 32, 64, 128],
            "strides": [2, 2, 2],
            "num_res_units": 2,
        }
    )

    def to_json(self) -> str:
        """Compact, key-sorted JSON (the run tag's value)."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types (lists, not tuples): what the run tag holds, read back."""
        data = asdict(self)
        data["network"] = dict(self.network)
        return json.loads(json.dumps(data))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`as_dict` output (a run tag or the model's metadata).

        Raises
        ------
        ValueError
            When a required key is missing, with the key named.
        """
        try:
            return cls(
                channels=tuple(data["channels"]),
                regions=tuple(data["regions"]),
                spacing_mm=tuple(float(v) for v in data["spacing_mm"]),  # type: ignore[arg-type]
                orientation=str(data.get("orientation", "LPS")),
                roi_size=tuple(int(v) for v in data["roi_size"]),  # type: ignore[arg-type]
                sw_overlap=float(data.get("sw_overlap", 0.25)),
                normalisation=str(data["normalisation"]),
                threshold=float(data["threshold"]),
                network=dict(data.get("network", {})),
            )
        except KeyError as exc:
            raise ValueError(f"model configuration lacks {exc.args[0]!r}: {dict(data)!r}") from exc

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_mapping(json.loads(text))


def build_network(config: ModelConfig) -> Any:
    """The ``torch.nn.Module`` ``config.network`` describes (4 in, 3 out, logits).

    Raises
    ------
    ValueError
        For a network name this version does not build.
    """
    from monai.networks.nets import UNet

    spec = dict(config.network)
    name = spec.pop("name", "UNet")
    if name != "UNet":
        raise ValueError(f"network {name!r} is not one NeuroNova builds; use 'UNet'")
    return UNet(
        spatial_dims=3,
        in_channels=len(config.channels),
        out_channels=len(config.regions),
        channels=tuple(spec["channels"]),
        strides=tuple(spec["strides"]),
        num_res_units=int(spec.get("num_res_units", 2)),
    )
