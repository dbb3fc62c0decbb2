"""The promotion gate's rule on held-out figures, and the approvals table's migration.

The gate against a real MLflow server, the API and the CLI: tests/test_model_gate_e2e.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from neuronova_lib.ai.gate import Criteria, check
from neuronova_lib.ai.registry import (
    RegistryUnavailable,
    folder_digest,
    served_version,
    tracking_uri,
)
from neuronova_lib.config import Settings

CRITERIA = Criteria(min_dice={"tc": 0.85, "wt": 0.85, "et": 0.75}, max_hd95=None,
                    tolerance=0.02)
GOOD = {"heldout_dice_tc": 0.90, "heldout_dice_wt": 0.91, "heldout_dice_et": 0.80,
        "heldout_hd95_tc": 4.0, "heldout_hd95_wt": 5.0, "heldout_hd95_et": 6.0}


def test_figures_above_every_threshold_pass() -> None:
    assert check(GOOD, CRITERIA) == []


def test_a_figure_below_its_threshold_fails_by_how_much() -> None:
    (failure,) = check({**GOOD, "heldout_dice_et": 0.70}, CRITERIA)
    assert (failure.figure, failure.against) == ("heldout_dice_et", "threshold")
    assert failure.by == pytest.approx(0.05)
    assert "heldout_dice_et 0.7 is below the threshold 0.75 by 0.05" in failure.message


def test_a_missing_dice_fails() -> None:
    figures = {k: v for k, v in GOOD.items() if k != "heldout_dice_wt"}
    (failure,) = check(figures, CRITERIA)
    assert (failure.figure, failure.against) == ("heldout_dice_wt", "missing")
    assert check({**GOOD, "heldout_dice_wt": float("nan")}, CRITERIA)[0].against == "missing"


def test_worse_than_the_champion_beyond_the_tolerance_fails() -> None:
    champion = {**GOOD, "heldout_dice_tc": 0.95}
    (failure,) = check(GOOD, CRITERIA, champion, "3")
    assert (failure.figure, failure.against) == ("heldout_dice_tc", "champion")
    assert failure.limit == pytest.approx(0.93)
    assert failure.by == pytest.approx(0.03)
    assert "champion's (version 3) 0.95 by 0.05" in failure.message
    assert "beyond the tolerance 0.02 by 0.03" in failure.message


def test_worse_than_the_champion_within_the_tolerance_passes() -> None:
    assert check(GOOD, CRITERIA, {**GOOD, "heldout_dice_tc": 0.915}, "3") == []


def test_the_hd95_cap_applies_only_when_set() -> None:
    capped = Criteria(CRITERIA.min_dice, max_hd95=5.5, tolerance=0.02)
    (failure,) = check(GOOD, capped)
    assert (failure.figure, failure.by) == ("heldout_hd95_et", pytest.approx(0.5))
    assert check({k: v for k, v in GOOD.items() if k != "heldout_hd95_tc"},
                 capped)[0].against == "missing"


def test_criteria_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURONOVA_GATE_MIN_DICE_ET", "0.8")
    monkeypatch.setenv("NEURONOVA_GATE_TOLERANCE", "0.01")
    monkeypatch.setenv("NEURONOVA_GATE_MAX_HD95", "9.5")
    criteria = Criteria.from_settings(Settings())
    assert criteria == Criteria({"tc": 0.85, "wt": 0.85, "et": 0.8}, 9.5, 0.01)


def test_tracking_uri_is_the_platform_mlflow_unless_overridden(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEURONOVA_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("NEURONOVA_MLFLOW_PORT", "8999")
    assert tracking_uri(Settings()) == "http://127.0.0.1:8999/mlflow"
    monkeypatch.setenv("NEURONOVA_MLFLOW_TRACKING_URI", "https://mlflow.example.org/")
    assert tracking_uri(Settings()) == "https://mlflow.example.org"


def test_folder_digest_sees_content_and_names_but_not_registration_meta(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "model.pth").write_bytes(b"weights")
    (tmp_path / "MLmodel").write_text("flavors: {}")
    first = folder_digest(tmp_path)
    (tmp_path / "registered_model_meta").write_text("model_name: x\nmodel_version: 2\n")
    assert folder_digest(tmp_path) == first
    (tmp_path / "data" / "model.pth").write_bytes(b"weightz")
    assert folder_digest(tmp_path) != first


@pytest.mark.e2e  # importing mlflow runs `uname -p` (platform.processor)
def test_an_unreachable_mlflow_is_reported_not_waited_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from neuronova_lib.stack.local import free_port

    for variable in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NEURONOVA_HOME", str(tmp_path))
    monkeypatch.setenv("NEURONOVA_MLFLOW_PORT", str(free_port()))  # nothing listens there
    settings = Settings()
    with pytest.raises(RegistryUnavailable, match=r"MLflow at http://127\.0\.0\.1:\d+/mlflow "
                       r"failed on registered model 'brain-tumor-seg'.*is it running"):
        served_version(settings)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
