"""Brain-tumour segmentation: training, evaluation and inference with MONAI and MLflow.

Modules, by what they hold:

* :mod:`.model_config` — channels, regions, grid, threshold and the network (one
  JSON that travels with the model).
* :mod:`.dataset` — cases from a folder in the BraTS 2021 layout, checked, split.
* :mod:`.demo_sets` — synthetic training, held-out and hard sets in that layout.
* :mod:`.transforms` — MONAI dictionary transforms for training and evaluation.
* :mod:`.train` — the training loop and the MLflow run around it.
* :mod:`.evaluate` — Dice and HD95 per region on held-out cases.
* :mod:`.predict` — sliding-window inference and :class:`~.predict.Segmenter`.
* :mod:`.tracking` — tracking URI, server check, environment, provenance digest.
* :mod:`.figures` — the run's picture of a prediction.
* :mod:`.cli` — ``neuronova train``.
* :mod:`.registry`, :mod:`.gate`, :mod:`.models_cli` — the model registry, the promotion
  gate and ``neuronova models``.
* :mod:`.results`, :mod:`.inference` — DICOM SEG and SR, the inference job on Dask.

The demo model is trained on synthetic data: not for clinical use.

Heavy imports (torch, MONAI, MLflow) happen inside the functions that need
them, so importing :mod:`neuronova_lib.ai` is cheap.
"""

from __future__ import annotations

from typing import Any

from .model_config import CHANNELS, CONFIG_TAG, DEFAULT_MODEL_NAME, REGIONS, ModelConfig

_segmenters: dict[tuple[str, str | None], Any] = {}


def model_uri(model: str) -> str:
    """An MLflow model URI from ``name@alias``, ``name/version`` or a URI given as is."""
    if ":/" in model:
        return model
    return f"models:/{model}"


def segment(
    volume_or_channels: Any,
    model: str = f"{DEFAULT_MODEL_NAME}@champion",
    *,
    spacing: tuple[float, float, float] | None = None,
    tracking_uri: str | None = None,
) -> Any:
    """Tumour masks (TC, WT, ET) of one study, from a notebook.

    Parameters
    ----------
    volume_or_channels : Volume or ndarray
        A 4-channel :class:`~neuronova_lib.volume.Volume` (``client.load_study``;
        its spacing is used), or a ``(4, X, Y, Z)`` array with ``spacing``.
    model : str
        ``name@alias``, ``name/version`` or any MLflow model URI; default the
        champion of ``brain-tumor-seg``.
    spacing : tuple of float, optional
        Voxel size in mm; required with an array.
    tracking_uri : str, optional
        MLflow server; default ``MLFLOW_TRACKING_URI``.

    Returns
    -------
    ndarray
        bool ``(3, X, Y, Z)`` on the input grid.

    Raises
    ------
    TypeError
        For a volume without channels.
    ValueError
        For an array without ``spacing``, or a volume missing a channel.
    """
    from .predict import Segmenter

    channels = getattr(volume_or_channels, "channels", None)
    if channels is not None:  # a Volume
        if not channels:
            raise TypeError("segment needs the study's four channels (client.load_study), "
                            "not one series")
        names = list(channels)
        index = []
        for channel in CHANNELS:  # the platform's volumes call T1c "t1c", BraTS "t1ce"
            aliases = (channel, "t1c") if channel == "t1ce" else (channel,)
            found = [names.index(a) for a in aliases if a in names]
            if not found:
                raise ValueError(f"the volume lacks the {channel} channel (it has {names})")
            index.append(found[0])
        array = volume_or_channels.array[index]
        spacing = volume_or_channels.spacing
    else:
        array = volume_or_channels
        if spacing is None:
            raise ValueError("pass spacing=(sx, sy, sz) in mm with a channels array")
    key = (model_uri(model), tracking_uri)
    if key not in _segmenters:
        _segmenters[key] = Segmenter.from_mlflow(key[0], tracking_uri=tracking_uri)
    return _segmenters[key](array, spacing=spacing)


__all__ = ["CHANNELS", "CONFIG_TAG", "DEFAULT_MODEL_NAME", "REGIONS", "ModelConfig",
           "model_uri", "segment"]
