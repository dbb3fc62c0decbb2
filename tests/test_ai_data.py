"""neuronova_lib.ai without a long training: the BraTS-layout loader, determinism, the CLI's errors.

The determinism test trains a tiny network for a few steps twice with one
seed (same losses, same weights) and once with another (different losses),
so that it can fail both ways.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import mlflow  # noqa: F401  imported by MONAI inside fit(); its telemetry runs `uname -p` once
import nibabel as nib
import numpy as np
import pytest

from neuronova_lib.ai.dataset import DatasetError, load_split, read_cases
from neuronova_lib.ai.demo_sets import HARD_APPEARANCE, TRAIN_APPEARANCE
from neuronova_lib.ai.model_config import CHANNELS, ModelConfig
from neuronova_lib.cli import main as neuronova
from neuronova_lib.demo import build_case
from neuronova_lib.demo.brats_layout import write_brats_cases
from neuronova_lib.stack.local import free_port

TINY = ModelConfig(roi_size=(32, 32, 32),
                   network={"name": "UNet", "channels": [8, 16, 32], "strides": [2, 2],
                            "num_res_units": 1})


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic cases in the BraTS layout (2 mm grid)."""
    root = tmp_path_factory.mktemp("brats")
    write_brats_cases(root, range(1, 4), seed=5, appearance=TRAIN_APPEARANCE)
    return root


def test_demo_cases_are_in_the_brats_2021_layout(cases: Path) -> None:
    case = cases / "NeuroNova-s5-00001"
    names = sorted(p.name for p in case.iterdir())
    assert names == sorted(f"NeuroNova-s5-00001_{s}.nii.gz"
                           for s in ("t1", "t1ce", "t2", "flair", "seg"))
    labels = np.asarray(nib.load(case / "NeuroNova-s5-00001_seg.nii.gz").dataobj)
    assert set(np.unique(labels)) == {0, 1, 2, 4}
    flair = nib.load(case / "NeuroNova-s5-00001_flair.nii.gz")
    assert flair.shape == labels.shape == (96, 96, 80)
    assert nib.aff2axcodes(flair.affine) == ("L", "P", "S")  # as BraTS 2021's NIfTI
    loaded = read_cases(cases)
    assert [c.case_id for c in loaded] == [f"NeuroNova-s5-0000{i}" for i in (1, 2, 3)]
    assert list(loaded[0].images) == list(CHANNELS)


def test_the_hard_appearance_makes_fainter_tumours_with_more_noise() -> None:
    easy = build_case(9, 1, (96, 96, 80), (2.0, 2.0, 2.0), skull_stripped=True,
                      appearance=TRAIN_APPEARANCE)
    hard = build_case(9, 1, (96, 96, 80), (2.0, 2.0, 2.0), skull_stripped=True,
                      appearance=HARD_APPEARANCE)
    assert hard.tumour_contrast < 0.45 < 0.6 <= easy.tumour_contrast

    def enhancing_contrast(case) -> float:  # ET against white matter on T1c
        t1c = case.channels["t1c"].astype(float)
        wm = case.tissues["wm"] > 0.9
        return (t1c[case.labels == 4].mean() - t1c[wm].mean()) / t1c[wm].std()

    assert enhancing_contrast(hard) < enhancing_contrast(easy)


def test_a_case_missing_a_channel_is_refused_by_name(cases: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "data"
    write_brats_cases(broken, [1, 2], seed=5)
    (broken / "NeuroNova-s5-00002" / "NeuroNova-s5-00002_t1ce.nii.gz").unlink()
    with pytest.raises(DatasetError) as caught:
        read_cases(broken)
    message = str(caught.value)
    assert "NeuroNova-s5-00002" in message and "NeuroNova-s5-00002_t1ce.nii.gz" in message
    assert "t1, t1ce, t2, flair" in message
    # The command says the same, before it trains (the MLflow check passes on a local store).
    rc = neuronova(["train", "--data", str(broken), "--tracking-uri", f"file://{tmp_path}/mlruns",
                    "--quiet"])
    assert rc == 2
    assert "NeuroNova-s5-00002_t1ce.nii.gz" in capsys.readouterr().err


def test_a_folder_without_a_split_is_split_by_seed(cases: Path) -> None:
    first = load_split(cases, heldout_fraction=0.34, seed=1)
    again = load_split(cases, heldout_fraction=0.34, seed=1)
    assert [c.case_id for c in first.heldout] == [c.case_id for c in again.heldout]
    assert len(first.heldout) == 1 and len(first.train) == 2 and not first.hard
    provenance = first.provenance()
    entry = provenance["heldout"][0]["files"][0]
    path = next(p for c in first.heldout for p in c.files() if p.name == entry["name"])
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_training_is_deterministic_under_a_seed(cases: Path) -> None:
    from neuronova_lib.ai.train import TrainingOptions, fit

    train = read_cases(cases)[:2]
    runs = [fit(train, TrainingOptions(steps=3, seed=seed, config=TINY, device="cpu"))
            for seed in (11, 11, 12)]
    assert runs[0].losses == runs[1].losses
    first, second = (r.net.state_dict() for r in runs[:2])
    assert all(np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)
    assert runs[2].losses != runs[0].losses


def test_an_unreachable_mlflow_is_named_with_the_way_to_start_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    rc = neuronova(["train", "--demo", "1", "--tracking-uri", url, "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"MLflow is not reachable at {url}" in err
    assert "neuronova up" in err and "--tracking-uri" in err
