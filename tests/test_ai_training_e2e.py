"""Train a model against a real MLflow server and check what the run records.

One short training run (``neuronova train --demo``) on freshly generated
synthetic cases, its length fixed by a step count (the machine is shared: wall
time varies, what is learnt does not). Then: what the run logged (parameters,
metrics, provenance with file hashes, environment, picture, model config), the
registered version without an alias, and the model loaded back as a
:class:`Segmenter` segmenting a case on another voxel grid.

The held-out quality bar of issue 10 (Dice TC ≥ 0.85, WT ≥ 0.85, ET ≥ 0.75
after a fixed number of steps) is not reached yet: 700 steps on 24 cases gave
0.869 / 0.761 / 0.571. Its test joins this file once training reaches it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow_fixture import mlflow_server  # noqa: F401  (fixture)

from neuronova_lib.ai.demo_sets import TRAIN_APPEARANCE
from neuronova_lib.ai.model_config import CONFIG_TAG, ModelConfig
from neuronova_lib.cli import main as neuronova
from neuronova_lib.demo import build_case

#: A minute or two on two quiet cores; a machine shared with other test runs takes several
#: times that, and pytest's default limit (300 s) would stop the training, not a hang.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

TRAIN_CASES = 6
HELDOUT_CASES = 2
HARD_CASES = 2
STEPS = 100
SEED = 3
#: One torch thread: the CI machine is shared, and two threads waiting on each other
#: there are several times slower.
PATCH = 64
MODEL_NAME = "brain-tumor-seg-ci"


@pytest.fixture(scope="module")
def trained(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
            ) -> dict[str, Any]:
    """The JSON summary of one `neuronova train --demo` run, with its data folder."""
    import contextlib
    import io

    data = tmp_path_factory.mktemp("training")
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        rc = neuronova(["train", "--demo", str(TRAIN_CASES), "--heldout-cases",
                        str(HELDOUT_CASES), "--hard-cases", str(HARD_CASES),
                        "--data-dir", str(data), "--steps", str(STEPS), "--seed", str(SEED),
                        "--patch", str(PATCH), "--threads", "1",
                        "--tracking-uri", mlflow_server, "--experiment", "ci-training",
                        "--register", MODEL_NAME, "--json", "--quiet"])
    elapsed = time.perf_counter() - started
    assert rc == 0, out.getvalue()
    summary = json.loads(out.getvalue())
    print(f"\ntraining run: {elapsed:.0f} s in all, {summary['train_seconds']} s training; "
          f"metrics {json.dumps(summary['metrics'])}")
    return {"summary": summary, "data": data, "tracking_uri": mlflow_server}


def test_held_out_and_hard_figures_are_logged(trained: dict[str, Any]) -> None:
    metrics = trained["summary"]["metrics"]
    assert metrics["heldout_cases"] == HELDOUT_CASES
    assert metrics["hard_cases"] == HARD_CASES
    for region in ("tc", "wt", "et"):
        for kind in ("heldout", "hard"):
            assert 0.0 <= metrics[f"{kind}_dice_{region}"] <= 1.0, metrics
            assert metrics[f"{kind}_hd95_{region}"] >= 0.0, metrics


def test_the_run_records_what_trained_it(trained: dict[str, Any], tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(trained["tracking_uri"])
    run = client.get_run(trained["summary"]["run_id"])
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["steps"] == str(STEPS) and params["seed"] == str(SEED)
    assert params["train_cases"] == str(TRAIN_CASES)
    assert params["loss"] == "DiceLoss(sigmoid,batch)+BCEWithLogits"
    assert params["roi_size"] == json.dumps([PATCH] * 3)
    for name in ("heldout_dice_tc", "heldout_dice_wt", "heldout_dice_et", "heldout_hd95_tc",
                 "heldout_hd95_wt", "heldout_hd95_et", "heldout_cases", "hard_dice_et",
                 "hard_hd95_wt"):
        assert name in metrics, name
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert len(history) == STEPS // 25
    assert history[-1].value < history[0].value  # it learnt something
    config = ModelConfig.from_json(tags[CONFIG_TAG])
    assert config.channels == ("t1", "t1ce", "t2", "flair") and config.regions == ("TC", "WT", "ET")
    assert tags["neuronova.env.torch"] and tags["neuronova.env.monai"]
    assert tags["neuronova.env.device"] == "cpu"
    assert tags["neuronova.synthetic"] == "true"

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"provenance.json", "environment.json", "evaluation.json", "prediction.png",
            "cases.json"} <= artifacts
    provenance = json.loads(Path(client.download_artifacts(
        run.info.run_id, "provenance.json", str(tmp_path))).read_text())
    assert len(provenance["train"]) == TRAIN_CASES
    assert len(provenance["heldout"]) == HELDOUT_CASES
    first = provenance["train"][0]
    case_dir = trained["data"] / "train" / first["case_id"]
    for entry in first["files"]:
        digest = hashlib.sha256((case_dir / entry["name"]).read_bytes()).hexdigest()
        assert digest == entry["sha256"], entry["name"]
    assert len(tags["neuronova.data_sha256"]) == 64
    png = Path(client.download_artifacts(run.info.run_id, "prediction.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_registered_version_carries_no_alias(trained: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(trained["tracking_uri"])
    registered = trained["summary"]["registered"]
    assert registered == {"name": MODEL_NAME, "version": "1"}
    version = client.get_model_version(MODEL_NAME, "1")
    assert version.run_id == trained["summary"]["run_id"]
    assert client.get_registered_model(MODEL_NAME).aliases == {}


def test_the_model_segments_a_case_on_another_grid(trained: dict[str, Any]) -> None:
    from neuronova_lib.ai import segment
    from neuronova_lib.ai.predict import Segmenter

    segmenter = Segmenter.from_mlflow(f"models:/{MODEL_NAME}/1",
                                      tracking_uri=trained["tracking_uri"])
    assert segmenter.run_id == trained["summary"]["run_id"]
    assert segmenter.config["channels"] == ["t1", "t1ce", "t2", "flair"]
    assert segmenter.config["spacing_mm"] == [2.0, 2.0, 2.0]
    # 1.5 mm voxels, another field of view: never seen in training.
    case = build_case(SEED, 30_001, (120, 128, 100), (1.5, 1.5, 1.5), skull_stripped=True,
                      appearance=TRAIN_APPEARANCE)
    channels = np.stack([case.channels[k] for k in ("t1", "t1c", "t2", "flair")])
    started = time.perf_counter()
    masks = segmenter(channels, spacing=(1.5, 1.5, 1.5))
    print(f"\nSegmenter on a 120x128x100 case at 1.5 mm: {time.perf_counter() - started:.2f} s")
    assert masks.dtype == bool and masks.shape == (3, 120, 128, 100)
    truth = [np.isin(case.labels, values) for values in ((1, 4), (1, 2, 4), (4,))]
    dice = [2 * (m & t).sum() / max(m.sum() + t.sum(), 1) for m, t in zip(masks, truth,
                                                                         strict=True)]
    print(f"Dice TC/WT/ET after {STEPS} steps on that case: {dice}")
    again = segment(channels, f"{MODEL_NAME}/1", spacing=(1.5, 1.5, 1.5),
                    tracking_uri=trained["tracking_uri"])
    assert np.array_equal(again, masks)
