"""One model trained for the whole test session: the demo recipe, the quality bar, the champion.

``neuronova train --demo`` on freshly generated synthetic cases, its length
fixed by a step count (the machine is shared: wall time varies, what is
learnt does not), against the session's MLflow server. The training tests
check what the run records and assert the held-out quality bar on it; the
inference tests register the same run as the platform's model and promote it
through the gate with the gate's real thresholds, so the SEG a job writes can
be compared with the synthetic case's ground truth. Training once, for both,
keeps the suite's longest step to one run, and it runs in the background,
beside the tests that do not need it (see ``pytest_collection_modifyitems``).

Loaded as a pytest plugin by ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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


def _train_command(data: Path, tracking_uri: str) -> list[str]:
    """The demo recipe on one torch thread, at a lower priority than the tests it runs beside:
    on a machine shared with other work, threads that wait for each other are several times
    slower, and the tests waiting on a service must not wait on the training."""
    return ["nice", "-n", "10", sys.executable, "-m", "neuronova_lib.cli",
            "train", "--demo", str(TRAIN_CASES), "--heldout-cases", str(HELDOUT_CASES),
            "--hard-cases", str(HARD_CASES), "--data-dir", str(data), "--steps", str(STEPS),
            "--seed", str(SEED), "--patch", str(PATCH), "--threads", "1",
            "--tracking-uri", tracking_uri, "--experiment", "ci-training",
            "--register", MODEL_NAME, "--json", "--quiet"]


#: Set at collection when some collected test needs the trained model.
_NEEDED = pytest.StashKey[bool]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the modules that need the trained model last, so that the training, started in the
    background with the first end-to-end test, overlaps the rest of the suite instead of
    adding to it. Whole modules move, so module fixtures are still set up once."""
    late = {getattr(item, "module", None) for item in items
            if "trained_model" in getattr(item, "fixturenames", ())}
    late.discard(None)
    config.stash[_NEEDED] = bool(late)
    if late:
        items[:] = ([item for item in items if getattr(item, "module", None) not in late]
                    + [item for item in items if getattr(item, "module", None) in late])


@dataclass
class _Training:
    process: subprocess.Popen[bytes]
    data: Path
    output: Path
    log: Path
    tracking_uri: str
    started: float


@pytest.fixture(scope="session")
def _training(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Training]:
    """``neuronova train`` as a process of its own, started once and left to run."""
    data = tmp_path_factory.mktemp("training")
    logs = tmp_path_factory.mktemp("training-logs")
    output, log = logs / "summary.json", logs / "train.log"
    with output.open("wb") as stdout, log.open("wb") as stderr:
        process = subprocess.Popen(_train_command(data, mlflow_server), stdout=stdout,
                                   stderr=stderr, start_new_session=True)
    training = _Training(process, data, output, log, mlflow_server, time.perf_counter())
    yield training
    if process.poll() is None:  # the session ended (-x, ^C) before a test needed the model
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(autouse=True)
def _start_training_early(request: pytest.FixtureRequest) -> None:
    """Start the training with the first end-to-end test (a unit test may start no process)."""
    if request.config.stash.get(_NEEDED, False) and request.node.get_closest_marker("e2e"):
        request.getfixturevalue("_training")


@pytest.fixture(scope="session")
def trained_model(_training: _Training) -> TrainedModel:
    """The background training's run, once it has ended (about 15 minutes on a quiet machine:
    the suite's longest step, mostly hidden behind the tests that run before this one)."""
    rc = _training.process.wait()
    elapsed = time.perf_counter() - _training.started
    log = _training.log.read_text(errors="replace")
    assert rc == 0, f"neuronova train failed ({rc}):\n{log[-4000:]}"
    summary = json.loads(_training.output.read_text())
    print(f"\ntraining run: {elapsed:.0f} s since it started, {summary['train_seconds']} s "
          f"training; metrics {json.dumps(summary['metrics'])}")
    return TrainedModel(summary, _training.data, _training.tracking_uri)
