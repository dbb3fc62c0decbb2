"""Held-out evaluation: Dice and 95% Hausdorff distance per region (MONAI metrics).

Cases are preprocessed as in training (the model's grid) and segmented
whole with the sliding window; each region is scored on its own. Metric
names follow the contract the promotion gate reads:
``<set>_dice_tc``, ``<set>_hd95_wt``, …, ``<set>_cases``.

A prediction that misses a region the case has has no surface to measure:
its HD95 counts as the diagonal of the case's field of view (the worst
distance possible there) instead of being dropped, so a model cannot look
better by predicting nothing.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dataset import BratsCase
from .model_config import ModelConfig
from .predict import predict_logits
from .transforms import IMAGE, LABEL, evaluation_transforms

logger = logging.getLogger(__name__)


@dataclass
class Example:
    """One evaluated case kept for the run's picture (arrays on the model's grid)."""

    case_id: str
    flair: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray


@dataclass
class Evaluation:
    """Scores of one set of cases.

    Attributes
    ----------
    dice, hd95 : dict of str to float
        Mean over cases per region (``tc``, ``wt``, ``et``); HD95 in mm.
    cases : list of dict
        Per case: ``case_id``, ``dice`` and ``hd95`` per region.
    example : Example or None
    seconds_per_case : float
        Preprocessing and network, mean.
    """

    dice: dict[str, float]
    hd95: dict[str, float]
    cases: list[dict[str, Any]] = field(default_factory=list)
    example: Example | None = None
    seconds_per_case: float = 0.0

    def metrics(self, prefix: str) -> dict[str, float]:
        """MLflow metric names and values: ``heldout_dice_tc`` … ``heldout_cases``."""
        out = {f"{prefix}_dice_{r}": v for r, v in self.dice.items()}
        out.update({f"{prefix}_hd95_{r}": v for r, v in self.hd95.items()})
        out[f"{prefix}_cases"] = float(len(self.cases))
        return out


def evaluate(
    net: Any,
    cases: Sequence[BratsCase],
    config: ModelConfig,
    device: Any,
    on_case: Callable[[str], None] | None = None,
) -> Evaluation:
    """Score ``net`` on whole ``cases``.

    Raises
    ------
    ValueError
        When ``cases`` is empty.
    """
    import time

    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    if not cases:
        raise ValueError("no cases to evaluate")
    regions = [r.lower() for r in config.regions]
    transform = evaluation_transforms(config)
    per_case: list[dict[str, Any]] = []
    example = None
    spent = 0.0
    for case in cases:
        started = time.perf_counter()
        item = transform(case.as_item())
        logits = predict_logits(net, item[IMAGE], config, device)
        spent += time.perf_counter() - started
        prediction = (torch.sigmoid(logits) > config.threshold).float()[None]
        truth = item[LABEL].as_tensor().float()[None]
        spacing = [float(s) for s in config.spacing_mm]
        dice = compute_dice(prediction, truth, include_background=True, ignore_empty=False)[0]
        with warnings.catch_warnings():  # MONAI warns on every empty region
            warnings.simplefilter("ignore")
            hd = compute_hausdorff_distance(prediction, truth, include_background=True,
                                            percentile=95, spacing=spacing)[0]
        diagonal = float(np.linalg.norm(np.asarray(truth.shape[2:]) * np.asarray(spacing)))
        scores: dict[str, Any] = {"case_id": case.case_id, "dice": {}, "hd95": {}}
        for index, region in enumerate(regions):
            scores["dice"][region] = float(dice[index])
            value = float(hd[index])
            if not np.isfinite(value):
                # nan: one side empty. Both empty is a perfect answer; a missed or an
                # invented region is as far off as the field of view allows.
                both_empty = not prediction[0, index].any() and not truth[0, index].any()
                value = 0.0 if both_empty else diagonal
            scores["hd95"][region] = value
        per_case.append(scores)
        if example is None:
            example = Example(case.case_id, item[IMAGE][-1].numpy(), truth[0].numpy() > 0,
                              prediction[0].numpy() > 0)
        if on_case is not None:
            on_case(case.case_id)
    dice_mean = {r: float(np.mean([c["dice"][r] for c in per_case])) for r in regions}
    hd_mean = {r: float(np.mean([c["hd95"][r] for c in per_case])) for r in regions}
    return Evaluation(dice_mean, hd_mean, per_case, example, spent / len(cases))
