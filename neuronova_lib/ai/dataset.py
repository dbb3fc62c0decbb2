"""Training cases from a folder in the BraTS 2021 layout.

::

    FOLDER/<case>/<case>_t1.nii.gz  _t1ce  _t2  _flair  _seg      (one case)

or the same case folders split into ``train/``, ``heldout/`` and optionally
``hard/`` below FOLDER (what ``neuronova train --demo`` writes). A folder of
cases without the split is divided into training and held-out cases by a
seeded shuffle.

Every case is checked before training starts: a missing channel or label
file stops the run with the case and the file named, instead of an error
deep inside a data loader an hour later.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .model_config import CHANNELS

#: File suffix of the label map.
LABEL_SUFFIX = "seg"
#: Extensions accepted for every file (BraTS ships ``.nii.gz``).
EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii")
#: Sub-folders of a split data set.
SPLITS: tuple[str, ...] = ("train", "heldout", "hard")


class DatasetError(ValueError):
    """The folder is not a usable BraTS-layout data set (the message says what is wrong)."""


@dataclass(frozen=True)
class BratsCase:
    """The files of one case.

    Attributes
    ----------
    case_id : str
    images : dict of str to Path
        Channel (``t1``, ``t1ce``, ``t2``, ``flair``) → NIfTI file.
    label : Path
        The label map (BraTS values 0/1/2/4).
    """

    case_id: str
    images: dict[str, Path]
    label: Path

    def files(self) -> list[Path]:
        """Every input file, channels in order and the label last."""
        return [*(self.images[c] for c in CHANNELS), self.label]

    def as_item(self) -> dict[str, str]:
        """The dictionary MONAI's dictionary transforms take."""
        item = {c: str(p) for c, p in self.images.items()}
        item["label"] = str(self.label)
        item["case_id"] = self.case_id
        return item


@dataclass(frozen=True)
class DataSplit:
    """Training, held-out and (optional) hard cases."""

    train: list[BratsCase]
    heldout: list[BratsCase]
    hard: list[BratsCase]

    def provenance(self) -> dict[str, list[dict[str, object]]]:
        """Each split's cases with the SHA-256 and size of every input file."""
        return {
            name: [
                {
                    "case_id": case.case_id,
                    "files": [
                        {"name": path.name, "sha256": sha256_file(path),
                         "bytes": path.stat().st_size}
                        for path in case.files()
                    ],
                }
                for case in cases
            ]
            for name, cases in (("train", self.train), ("heldout", self.heldout),
                                ("hard", self.hard))
        }


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _find(directory: Path, case_id: str, suffix: str) -> Path | None:
    for extension in EXTENSIONS:
        candidate = directory / f"{case_id}_{suffix}{extension}"
        if candidate.is_file():
            return candidate
    return None


def read_case(directory: str | Path) -> BratsCase:
    """One case folder, checked.

    Raises
    ------
    DatasetError
        When a channel or the label map is missing; the message names the
        case, the missing files and the names expected.
    """
    directory = Path(directory)
    case_id = directory.name
    images: dict[str, Path] = {}
    missing = []
    for channel in CHANNELS:
        found = _find(directory, case_id, channel)
        if found is None:
            missing.append(f"{case_id}_{channel}.nii.gz")
        else:
            images[channel] = found
    label = _find(directory, case_id, LABEL_SUFFIX)
    if label is None:
        missing.append(f"{case_id}_{LABEL_SUFFIX}.nii.gz")
    if missing:
        raise DatasetError(
            f"case {case_id} ({directory}) lacks {', '.join(missing)}; every case needs the "
            f"four channels {', '.join(CHANNELS)} and the label map {LABEL_SUFFIX}, named "
            f"<case>_<channel>.nii.gz as in BraTS 2021"
        )
    return BratsCase(case_id, images, label)  # type: ignore[arg-type]


def read_cases(folder: str | Path) -> list[BratsCase]:
    """Every case folder directly below ``folder``, sorted by name.

    Raises
    ------
    DatasetError
        When ``folder`` does not exist, holds no case folder, or a case is incomplete.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; pass a folder of BraTS-layout cases "
                           "(<case>/<case>_t1.nii.gz, _t1ce, _t2, _flair, _seg)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{root} holds no case folders (<case>/<case>_t1.nii.gz, _t1ce, "
                           "_t2, _flair, _seg)")
    return [read_case(p) for p in folders]


def load_split(folder: str | Path, heldout_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """Training, held-out and hard cases of a data set folder.

    With ``train/`` and ``heldout/`` (and optionally ``hard/``) below
    ``folder``, those; otherwise the case folders of ``folder`` shuffled with
    ``seed`` and cut at ``heldout_fraction`` (no hard set).

    Raises
    ------
    DatasetError
        As :func:`read_cases`, or when the split leaves no training or no
        held-out case.
    """
    root = Path(folder)
    if (root / "train").is_dir() and (root / "heldout").is_dir():
        hard = read_cases(root / "hard") if (root / "hard").is_dir() else []
        return DataSplit(read_cases(root / "train"), read_cases(root / "heldout"), hard)
    cases = read_cases(root)
    if not 0.0 < heldout_fraction < 1.0:
        raise DatasetError(f"held-out fraction must lie between 0 and 1, got {heldout_fraction}")
    order = list(cases)
    random.Random(seed).shuffle(order)
    count = max(1, round(len(order) * heldout_fraction))
    if len(order) - count < 1:
        raise DatasetError(f"{root} holds {len(order)} case(s): too few to keep {count} "
                           "held out and train on the rest")
    heldout = sorted(order[:count], key=lambda c: c.case_id)
    train = sorted(order[count:], key=lambda c: c.case_id)
    return DataSplit(train, heldout, [])


def case_ids(cases: Sequence[BratsCase]) -> list[str]:
    return [c.case_id for c in cases]
