"""Synthetic training, held-out and hard sets in the BraTS layout (``neuronova train --demo``).

Case numbers never overlap between the sets, so no held-out case was seen
in training. Training and held-out cases share one appearance, with a wide
range of tumour contrast; the hard set has fainter tumours, more noise and a
stronger bias field than anything in training, and is reported apart: a
model that learnt "the bright blob" rather than the tumour's shape and its
pattern across the four channels shows it there.
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..demo.brats_layout import TRAINING_SHAPE, TRAINING_SPACING, write_brats_cases
from ..demo.phantom import Appearance

logger = logging.getLogger(__name__)

#: Training and held-out look: tumour contrast from 0.6 to 1 of nominal. Below ~0.5 the
#: oedema's FLAIR and T2 signal is grey matter's, and only shape and context tell them apart.
TRAIN_APPEARANCE = Appearance(contrast_range=(0.6, 1.0), noise_range=(0.012, 0.035),
                              bias_strength=0.08)
#: The hard set: contrast below the training range, more noise, stronger bias field.
HARD_APPEARANCE = Appearance(contrast_range=(0.25, 0.45), noise_range=(0.035, 0.06),
                             bias_strength=0.2)
#: Case numbers of the held-out and hard sets start here (training uses 1 … N).
HELDOUT_START = 10_001
HARD_START = 20_001


@dataclass(frozen=True)
class DemoSetSizes:
    """How many cases each set gets."""

    train: int = 64
    heldout: int = 8
    hard: int = 8


def write_demo_sets(root: str | Path, sizes: DemoSetSizes, seed: int = 0,
                    shape: tuple[int, int, int] = TRAINING_SHAPE,
                    spacing: tuple[float, float, float] = TRAINING_SPACING,
                    progress: bool = False) -> Path:
    """Write ``root/train``, ``root/heldout`` and ``root/hard``; returns ``root``.

    Raises
    ------
    ValueError
        When a set would be empty (training and held-out need a case each).
    """
    if sizes.train < 1 or sizes.heldout < 1 or sizes.hard < 0:
        raise ValueError(f"need at least one training and one held-out case, got {sizes}")
    root = Path(root)
    write_brats_cases(root / "train", range(1, sizes.train + 1), seed, shape, spacing,
                      appearance=TRAIN_APPEARANCE, progress=progress)
    write_brats_cases(root / "heldout", range(HELDOUT_START, HELDOUT_START + sizes.heldout),
                      seed, shape, spacing, appearance=TRAIN_APPEARANCE, progress=progress)
    if sizes.hard:
        write_brats_cases(root / "hard", range(HARD_START, HARD_START + sizes.hard), seed,
                          shape, spacing, appearance=HARD_APPEARANCE, progress=progress)
    return root


def write_demo_sets_once(root: str | Path, sizes: DemoSetSizes, seed: int = 0,
                         progress: bool = False) -> Path:
    """:func:`write_demo_sets`, unless ``root`` already holds sets of these sizes.

    The cases are a function of the seed and the case number, so sets of the same
    sizes written before are the same cases: they are reused (a second training
    run starts at once). Sets of other sizes are replaced, never mixed.
    """
    root = Path(root)
    if _counts(root) == {"train": sizes.train, "heldout": sizes.heldout, "hard": sizes.hard}:
        logger.info("reusing the synthetic cases in %s", root)
        return root
    print(f"writing {sizes.train} training, {sizes.heldout} held-out and {sizes.hard} hard "
          f"synthetic cases to {root}", file=sys.stderr)
    for name in ("train", "heldout", "hard"):
        if (root / name).is_dir():
            shutil.rmtree(root / name)
    return write_demo_sets(root, sizes, seed=seed, progress=progress)


def _counts(root: Path) -> dict[str, int]:
    counts = {}
    for name in ("train", "heldout", "hard"):
        path = root / name
        counts[name] = (sum(1 for p in path.iterdir() if p.is_dir() and not
                            p.name.startswith(".")) if path.is_dir() else 0)
    return counts
