"""Tumour segmentation with a trained model: the network's sliding window and :class:`Segmenter`.

:class:`Segmenter` is what inference jobs and notebooks use: built from an
MLflow model URI, it takes the four channels of one study on one voxel grid
and returns three boolean masks (TC, WT, ET) on that same grid. Between the
two it repeats the training's preprocessing from the model's own
configuration (resampling to the model's grid, per-channel normalisation),
runs the network window by window, and resamples the probabilities back
before thresholding, so a study at 1 mm or 4 mm gets masks at 1 mm or 4 mm.

The demo model is trained on synthetic data: not for clinical use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from .model_config import CONFIG_TAG, ModelConfig

logger = logging.getLogger(__name__)

#: Key of the model configuration in the MLflow model's metadata.
METADATA_KEY = "neuronova_model_config"


def default_device() -> Any:
    """CUDA when present, the CPU otherwise."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def predict_logits(net: Any, image: Any, config: ModelConfig, device: Any) -> Any:
    """Region logits ``(R, X, Y, Z)`` of one preprocessed image ``(C, X, Y, Z)``.

    Sliding window of ``config.roi_size`` with ``config.sw_overlap`` and
    Gaussian blending; mixed precision on CUDA. The result is a CPU float32
    tensor (a MetaTensor keeps the image's affine).
    """
    import torch
    from monai.inferers import sliding_window_inference

    autocast = (torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda"
                else nullcontext())
    net.eval()
    with torch.no_grad(), autocast:
        logits = sliding_window_inference(
            image.unsqueeze(0).to(device), roi_size=config.roi_size, sw_batch_size=2,
            predictor=net, overlap=config.sw_overlap, mode="gaussian",
        )
    return logits[0].float().cpu()


class ModelFilesChanged(RuntimeError):
    """A served version's files differ from those the promotion gate approved."""


class Segmenter:
    """A trained segmentation model, ready to apply to a study's channels.

    Build it with :meth:`from_mlflow`; call it on a ``(4, X, Y, Z)`` array.

    Parameters
    ----------
    net : torch.nn.Module
        The network (logits out).
    config : ModelConfig
        Its channels, regions, grid, normalisation and threshold.
    model_uri : str
        Where it was loaded from (``models:/brain-tumor-seg@champion``, ``runs:/…/model``).
    run_id : str
        The MLflow run that trained it.
    device : torch.device, optional
        Default: CUDA when present, else the CPU.

    Attributes
    ----------
    model_uri, run_id : str
    config : dict
        The model configuration as a plain dictionary (see CONTRACTS: channel
        order, regions, roi_size, spacing_mm, normalisation, threshold).
    model_config : ModelConfig
    """

    def __init__(self, net: Any, config: ModelConfig, model_uri: str = "", run_id: str = "",
                 device: Any = None) -> None:
        self.net = net
        self.model_config = config
        self.config = config.as_dict()
        self.model_uri = model_uri
        self.run_id = run_id
        self.device = device if device is not None else default_device()
        self.net.to(self.device).eval()

    def __repr__(self) -> str:
        return (f"Segmenter(model_uri={self.model_uri!r}, run_id={self.run_id!r}, "
                f"regions={list(self.model_config.regions)}, device={self.device})")

    @classmethod
    def from_mlflow(cls, uri: str, tracking_uri: str | None = None,
                    artifact_sha256: str | None = None) -> Segmenter:
        """Load a logged model and its configuration from MLflow.

        Parameters
        ----------
        uri : str
            An MLflow model URI: ``runs:/<run id>/model``,
            ``models:/<name>/<version>`` or ``models:/<name>@<alias>``.
        tracking_uri : str, optional
            The tracking server; default MLflow's own resolution
            (``MLFLOW_TRACKING_URI``).
        artifact_sha256 : str, optional
            The digest of the model's files the promotion gate approved
            (:func:`neuronova_lib.ai.registry.folder_digest`): the files are
            downloaded once and loaded only if they match, because anyone who
            may log to MLflow can overwrite a logged model's files in place.

        Raises
        ------
        ModelFilesChanged
            The files differ from the approved ones.
        ValueError
            When the model carries no NeuroNova model configuration (not
            trained by ``neuronova train``).
        mlflow.exceptions.MlflowException
            When the URI names no model (MLflow's message says which).
        """
        import tempfile

        import mlflow
        import mlflow.artifacts
        import mlflow.pytorch
        from mlflow.models import Model

        from .registry import folder_digest

        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        device = default_device()
        with tempfile.TemporaryDirectory(prefix="neuronova-model-") as tmp:
            local = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri))
            if artifact_sha256 is not None and folder_digest(local) != artifact_sha256:
                raise ModelFilesChanged(
                    f"the files of {uri} changed after the promotion gate approved them: they "
                    "are not served; register the model again from its training run and "
                    "promote the new version")
            info = Model.load(str(local))
            net = mlflow.pytorch.load_model(str(local), map_location=device)
        run_id = info.run_id or ""
        raw = (info.metadata or {}).get(METADATA_KEY)
        if raw is None and run_id:
            from mlflow.tracking import MlflowClient

            raw = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags.get(
                CONFIG_TAG)
        if raw is None:
            raise ValueError(
                f"{uri} carries no NeuroNova model configuration (metadata {METADATA_KEY!r} or "
                f"run tag {CONFIG_TAG!r}); train it with `neuronova train`"
            )
        config = ModelConfig.from_json(raw) if isinstance(raw, str) else \
            ModelConfig.from_mapping(raw)
        logger.info("loaded %s (run %s) on %s", uri, run_id, device)
        return cls(net, config, model_uri=uri, run_id=run_id, device=device)

    def probabilities(self, channels: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Region probabilities ``(R, X, Y, Z)`` float32 on the input grid.

        See :meth:`__call__` for the arguments.
        """
        import torch
        from monai.data import MetaTensor
        from monai.transforms import NormalizeIntensity, ResampleToMatch, Spacing

        array = _check_channels(channels, len(self.model_config.channels))
        spacing_t = _check_spacing(spacing)
        # The array's axes follow the model's orientation (LPS: i → left, j → posterior,
        # k → superior, as NeuroNova's volumes and BraTS NIfTI); MONAI works in RAS.
        affine = np.diag([*(_orientation_signs(self.model_config.orientation) *
                            np.asarray(spacing_t)), 1.0])
        source = MetaTensor(torch.as_tensor(array), affine=torch.as_tensor(affine))
        on_grid = Spacing(pixdim=self.model_config.spacing_mm, mode="bilinear")(source)
        normalised = NormalizeIntensity(nonzero=True, channel_wise=True)(on_grid)
        logits = predict_logits(self.net, normalised, self.model_config, self.device)
        probabilities = MetaTensor(torch.sigmoid(logits), affine=on_grid.affine)
        back = ResampleToMatch(mode="bilinear", padding_mode="border")(probabilities, source)
        return np.asarray(back.detach().cpu().numpy(), dtype=np.float32)

    def __call__(self, channels: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)
                 ) -> np.ndarray:
        """Masks of the regions (TC, WT, ET) on the input grid.

        Parameters
        ----------
        channels : ndarray
            ``(4, X, Y, Z)``, the channels in ``config["channels"]`` order
            (T1, T1c, T2, FLAIR) on one common voxel grid, raw scanner values
            (any dtype; normalised here). Axes as NeuroNova's volumes and
            BraTS NIfTI: i → patient left, j → posterior, k → superior.
        spacing : sequence of 3 floats
            Voxel size in mm along i, j, k.

        Returns
        -------
        ndarray
            bool ``(3, X, Y, Z)``.

        Raises
        ------
        TypeError
            When ``channels`` is not an array.
        ValueError
            For a wrong number of channels or dimensions, or a non-positive spacing.
        """
        return self.probabilities(channels, spacing) > self.model_config.threshold


def _check_channels(channels: Any, expected: int) -> np.ndarray:
    if not isinstance(channels, np.ndarray):
        raise TypeError(f"channels must be a numpy array (C, X, Y, Z), got {type(channels)!r}")
    if channels.ndim != 4 or channels.shape[0] != expected:
        raise ValueError(f"channels must be ({expected}, X, Y, Z), got shape {channels.shape}")
    return np.ascontiguousarray(channels, dtype=np.float32)


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(v) for v in spacing)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be three positive mm values, got {spacing!r}")
    return values  # type: ignore[return-value]


def _orientation_signs(axcodes: str) -> np.ndarray:
    """RAS sign of each array axis for axis codes such as ``LPS`` (diagonal orientations)."""
    signs = {"R": 1.0, "L": -1.0, "A": 1.0, "P": -1.0, "S": 1.0, "I": -1.0}
    order = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}
    if len(axcodes) != 3 or [order[c] for c in axcodes] != [0, 1, 2]:
        raise ValueError(f"model orientation {axcodes!r} is not a diagonal one (e.g. LPS, RAS)")
    return np.array([signs[c] for c in axcodes])
