"""One model trained for the whole test session: the demo recipe, the quality bar, the champion.

``neuronova train --demo`` on freshly generated synthetic cases, its length
fixed by a step count (the machine is shared: wall time varies, what is
learnt does not), against the session's MLflow server. The training tests
check what the run records and assert the held-out quality bar on it; the
inference tests register the same run as the platform's model and promote it
through the gate with the gate's real thresholds, so the SEG a job writes can
be compared with the synthetic case's ground truth. Training once, for both,
keeps the suite's longest step to one run.

Loaded as a pytest plugin by ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from neuronova_lib.cli import main as neuronova

#: The demo model's recipe (the defaults `neuronova up` trains with).
TRAIN_CASES = 64
HELDOUT_CASES = 8
HARD_CASES = 8
STEPS = 1200
SEED = 0
PATCH = 64
#: Registered name of the session's run (the inference tests register it again under the
#: platform's model name).
MODEL_NAME = "brain-tumor-seg-ci"


@dataclass(frozen=True)
class TrainedModel:
    """The session's training run: `neuronova train --json`'s summary, its data, its server."""

    summary: dict[str, Any]
    data: Path
    tracking_uri: str

    @property
    def run_id(self) -> str:
        return str(self.summary["run_id"])

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.summary["metrics"])


@pytest.fixture(scope="session")
def trained_model(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """Train the demo recipe once (several minutes: the suite's longest step)."""
    data = tmp_path_factory.mktemp("training")
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        # One torch thread: on a machine shared with other work, threads that wait for
        # each other are several times slower.
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
    return TrainedModel(summary, data, mlflow_server)
