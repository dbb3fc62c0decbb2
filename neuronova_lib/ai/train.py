"""Training: the loop (:func:`fit`) and a logged MLflow run around it (:func:`train`).

The loop is the same on a laptop CPU and on a GPU: a MONAI UNet with four
input channels and three sigmoid outputs (TC, WT, ET overlap, so each is its
own binary problem), ``DiceLoss(sigmoid=True)`` plus binary cross-entropy
(MONAI's ``DiceCELoss`` would apply softmax cross-entropy across the three
channels, wrong for overlapping regions), Adam with a cosine schedule, and a
length fixed by a **step count**, never by wall time, so that a shared
machine changes how long a run takes but not what it learns. CUDA with
mixed precision is used when present.

Under one seed a run is repeatable: MONAI's ``set_determinism``, torch's and
numpy's seeds, the transforms' own random state and the data order all come
from it.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dataset import DataSplit, case_ids
from .evaluate import Evaluation, evaluate
from .model_config import CONFIG_TAG, ModelConfig, build_network
from .predict import METADATA_KEY, default_device
from .tracking import DEFAULT_EXPERIMENT, check_reachable, environment, provenance_digest
from .transforms import IMAGE, LABEL, training_transforms

logger = logging.getLogger(__name__)

#: Run tag holding the SHA-256 of the data provenance document.
DATA_TAG = "neuronova.data_sha256"


class TrainingStopped(Exception):
    """Training was asked to stop before its last step (the run is marked failed)."""


@dataclass(frozen=True)
class TrainingOptions:
    """How long and how a model trains.

    Attributes
    ----------
    steps : int
        Optimiser steps (the training length).
    seed : int
        Seed of everything random.
    batch_size : int
        Patches per step.
    learning_rate : float
        Adam's initial learning rate; cosine decay to a tenth over ``steps``.
    log_every : int
        Steps between logged ``train_loss`` values (their mean).
    config : ModelConfig
        Network, grid, patch size and thresholds.
    device : str, optional
        ``cuda`` or ``cpu``; default CUDA when present.
    threads : int, optional
        CPU threads for torch; default torch's own choice. On a shared machine
        one thread per process is several times faster than threads that
        wait for each other.
    """

    steps: int = 1200
    seed: int = 0
    batch_size: int = 2
    learning_rate: float = 3e-3
    log_every: int = 25
    config: ModelConfig = field(default_factory=ModelConfig)
    device: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")

    def params(self) -> dict[str, Any]:
        """Flat MLflow parameters."""
        config = self.config
        return {
            "steps": self.steps, "seed": self.seed, "batch_size": self.batch_size,
            "learning_rate": self.learning_rate, "lr_schedule": "cosine_to_0.1",
            "optimizer": "Adam", "loss": "DiceLoss(sigmoid,batch)+BCEWithLogits",
            "network": config.network.get("name", "UNet"),
            "network_channels": json.dumps(list(config.network["channels"])),
            "network_strides": json.dumps(list(config.network["strides"])),
            "num_res_units": config.network.get("num_res_units", 2),
            "roi_size": json.dumps(list(config.roi_size)),
            "spacing_mm": json.dumps(list(config.spacing_mm)),
            "orientation": config.orientation, "channels": ",".join(config.channels),
            "regions": ",".join(config.regions), "normalisation": config.normalisation,
            "threshold": config.threshold, "sw_overlap": config.sw_overlap,
        }


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained network and its per-step losses."""

    net: Any
    losses: list[float]
    device: Any
    seconds: float


@dataclass
class TrainingResult:
    """A finished, logged run."""

    run_id: str
    experiment_id: str
    model_uri: str
    tracking_uri: str
    steps: int
    train_seconds: float
    heldout: Evaluation
    hard: Evaluation | None
    registered_version: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """One seed for MONAI, torch, numpy and Python's ``random``."""
    import torch
    from monai.utils import set_determinism

    set_determinism(seed=seed)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _device(options: TrainingOptions) -> Any:
    import torch

    return torch.device(options.device) if options.device else default_device()


def fit(
    split_train: list[Any],
    options: TrainingOptions,
    on_step: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Train a fresh network on ``split_train`` (BratsCase list) for ``options.steps`` steps.

    Parameters
    ----------
    split_train : list of BratsCase
    options : TrainingOptions
    on_step : callable, optional
        Called after every step with ``(step, loss)`` (1-based step).

    Returns
    -------
    FitResult
    """
    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceLoss

    if not split_train:
        raise ValueError("no training cases")
    seed_everything(options.seed)
    if options.threads:
        torch.set_num_threads(options.threads)
    device = _device(options)
    config = options.config
    dataset = CacheDataset(
        data=[c.as_item() for c in split_train],
        transform=training_transforms(config, options.seed),
        cache_rate=1.0, num_workers=0, progress=False,
    )
    order = torch.Generator().manual_seed(options.seed)
    loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=True, num_workers=0,
                        generator=order, drop_last=len(dataset) > options.batch_size)
    net = build_network(config).to(device)
    # Dice over the whole batch per region: a patch without tumour has no Dice of its
    # own (any false positive scores 1), which would push every output towards zero.
    dice = DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
    bce = torch.nn.BCEWithLogitsLoss()
    optimiser = torch.optim.Adam(net.parameters(), lr=options.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=options.steps, eta_min=options.learning_rate * 0.1)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    losses: list[float] = []
    started = time.perf_counter()
    net.train()
    step = 0
    while step < options.steps:
        for batch in loader:
            net.train()  # a callback may have evaluated the network
            # Plain tensors: MetaTensor's per-operation bookkeeping costs time in the
            # network and buys nothing there.
            image = _plain(batch[IMAGE]).to(device)
            label = _plain(batch[LABEL]).to(device)
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
                logits = net(image)
                loss = dice(logits, label) + bce(logits, label)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            schedule.step()
            step += 1
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step, losses[-1])
            if step >= options.steps:
                break
    return FitResult(net, losses, device, time.perf_counter() - started)


def _plain(tensor: Any) -> Any:
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


def model_signature(config: ModelConfig) -> Any:
    """Tensor signature: ``(batch, 4, X, Y, Z)`` float32 in, ``(batch, 3, X, Y, Z)`` logits out."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(config.channels), -1, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(config.regions), -1, -1, -1))]),
    )


def train(
    split: DataSplit,
    options: TrainingOptions,
    tracking_uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    register: str | None = None,
    progress: bool = False,
    tags: dict[str, str] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainingResult:
    """Train, evaluate and log one MLflow run; optionally register the model.

    Logs parameters, ``train_loss`` and ``learning_rate`` every
    ``options.log_every`` steps, the data provenance (``provenance.json``:
    every case and the SHA-256 of each file; tag ``neuronova.data_sha256``),
    the environment (tags ``neuronova.env.*`` and ``environment.json``), the
    held-out and hard-set metrics (``heldout_dice_tc`` …, per case in
    ``evaluation.json``), a picture of a held-out prediction
    (``prediction.png``), the model (``model``, pickle serialisation, tensor
    signature) and the tag ``neuronova.model_config``. Registering creates a
    version of ``register``; aliases are the promotion gate's, never set here.

    ``should_stop`` is asked after every step; when it answers yes the run
    ends as failed in MLflow and :class:`TrainingStopped` is raised (Ctrl-C in
    ``neuronova up``).

    Raises
    ------
    TrackingUnavailable
        When the MLflow server cannot be reached (before any training).
    TrainingStopped
        When ``should_stop`` asked for it.
    """
    import mlflow
    import torch

    check_reachable(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    config = options.config
    device = _device(options)
    provenance = split.provenance()
    with mlflow.start_run(experiment_id=experiment_id) as run:
        run_id = run.info.run_id
        mlflow.log_params({**options.params(), "train_cases": len(split.train),
                           "heldout_cases": len(split.heldout), "hard_cases": len(split.hard),
                           "device": str(device), "amp": device.type == "cuda"})
        env = environment(device)
        mlflow.set_tags({
            CONFIG_TAG: config.to_json(),
            DATA_TAG: provenance_digest(provenance),
            **{f"neuronova.env.{k}": v for k, v in env.items() if k != "executable"},
            **(tags or {}),
        })
        mlflow.log_dict(provenance, "provenance.json")
        mlflow.log_dict(env, "environment.json")
        mlflow.log_dict({"train": case_ids(split.train), "heldout": case_ids(split.heldout),
                         "hard": case_ids(split.hard)}, "cases.json")

        bar = _bar(options.steps, "training", progress)
        window: list[float] = []

        def on_step(step: int, loss: float) -> None:
            if should_stop is not None and should_stop():
                raise TrainingStopped(f"training stopped at step {step} of {options.steps}")
            window.append(loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"loss {loss:.3f}", refresh=False)
            if step % options.log_every == 0 or step == options.steps:
                mlflow.log_metrics({"train_loss": float(np.mean(window)),
                                    "learning_rate": fitted_lr[0]}, step=step)
                window.clear()

        fitted_lr = [options.learning_rate]
        try:
            result = fit(split.train, options, on_step=_track_lr(on_step, options, fitted_lr))
        finally:
            if bar is not None:
                bar.close()
        mlflow.log_metric("train_seconds", result.seconds)

        heldout = evaluate(result.net, split.heldout, config, result.device)
        metrics = heldout.metrics("heldout")
        hard = None
        if split.hard:
            hard = evaluate(result.net, split.hard, config, result.device)
            metrics.update(hard.metrics("hard"))
        metrics["inference_seconds_per_case"] = heldout.seconds_per_case
        mlflow.log_metrics(metrics, step=options.steps)
        mlflow.log_dict({"heldout": heldout.cases, "hard": hard.cases if hard else []},
                        "evaluation.json")
        if heldout.example is not None:
            from .figures import prediction_figure

            figure = prediction_figure(heldout.example, config.regions)
            mlflow.log_figure(figure, "prediction.png")
            import matplotlib.pyplot as plt

            plt.close(figure)

        import monai

        net = result.net.to("cpu").eval()
        info = mlflow.pytorch.log_model(
            net, name="model", serialization_format="pickle",
            signature=model_signature(config),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                              f"monai=={monai.__version__}", f"mlflow=={mlflow.__version__}"],
            metadata={METADATA_KEY: config.to_json()},
            registered_model_name=register,
        )
        version = str(info.registered_model_version) if register and \
            info.registered_model_version is not None else None
        model_uri = f"runs:/{run_id}/model"
    return TrainingResult(
        run_id=run_id, experiment_id=experiment_id, model_uri=model_uri,
        tracking_uri=tracking_uri, steps=options.steps, train_seconds=result.seconds,
        heldout=heldout, hard=hard, registered_version=version, metrics=metrics,
    )


def _track_lr(on_step: Callable[[int, float], None], options: TrainingOptions,
              holder: list[float]) -> Callable[[int, float], None]:
    """Keep the cosine schedule's current rate for the logged metric (same formula as torch's)."""
    import math

    low = options.learning_rate * 0.1

    def wrapped(step: int, loss: float) -> None:
        holder[0] = low + (options.learning_rate - low) * (
            1 + math.cos(math.pi * step / options.steps)) / 2
        on_step(step, loss)

    return wrapped


def _bar(total: int, description: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="step")


__all__ = ["DATA_TAG", "FitResult", "TrainingOptions", "TrainingResult", "TrainingStopped", "fit",
           "model_signature", "seed_everything", "train"]
