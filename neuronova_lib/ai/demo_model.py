"""The demo model `neuronova up` serves: trained here, on synthetic cases, when none is served.

A clean machine has no weights to download, so the first ``neuronova up``
trains the small demo UNet on freshly generated synthetic cases (a few
minutes on a CPU, with a progress bar), registers it and asks the promotion
gate to make it the champion, as the demo model owner, with the same
thresholds any model meets. A model that fails the gate stays registered and
unserved, and ``up`` says so; nothing goes around the gate.

Later runs find the approved champion and train nothing. The model is
trained on synthetic data and is not for clinical use.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings

logger = logging.getLogger(__name__)

#: The platform user the demo promotion is recorded under (a model owner among the demo users).
DEMO_OWNER = "owner"
#: MLflow experiment of the demo model's runs.
DEMO_EXPERIMENT = "neuronova-demo-model"


@dataclass(frozen=True)
class DemoModel:
    """What :func:`ensure_demo_model` found or made."""

    name: str
    version: str | None
    trained: bool
    served: bool
    message: str


def demo_data_dir(settings: Settings, seed: int) -> Path:
    """Where the demo model's synthetic training, held-out and hard cases are written."""
    return settings.home / "training" / f"demo-s{seed}"


def ensure_demo_model(settings: Settings, *, progress: bool = True,
                      should_stop: Callable[[], bool] | None = None) -> DemoModel:
    """Serve an approved champion of ``settings.model_name``, training one if there is none.

    Returns what happened; raises nothing for a refused or unreachable model (``up``
    goes on without one and prints the message), only for programming errors.
    ``should_stop`` is asked after every training step (Ctrl-C in ``up``).
    """
    from . import registry

    name = settings.model_name
    try:
        served = registry.served_version(settings, name)
    except registry.RegistryUnavailable as exc:
        return DemoModel(name, None, False, False, f"no demo model: MLflow is unreachable ({exc})")
    except (registry.ModelNotFound, registry.ModelNotApproved):
        pass
    else:
        return DemoModel(name, served.version, False, True,
                         f"{name} version {served.version} (approved champion)")
    if settings.demo_model_steps < 1:
        return DemoModel(name, None, False, False,
                         f"no model served: {name} has no approved champion and "
                         "NEURONOVA_DEMO_MODEL_STEPS is 0 (train one with `neuronova train`)")
    return _train_and_promote(settings, progress, should_stop)


def _train_and_promote(settings: Settings, progress: bool,
                       should_stop: Callable[[], bool] | None) -> DemoModel:
    from ..db.engine import session_factory
    from ..db.migrate import upgrade_database
    from ..db.users import get_user
    from . import gate, registry
    from .dataset import load_split
    from .demo_sets import DemoSetSizes, write_demo_sets_once
    from .models_cli import cli_audit
    from .train import TrainingOptions, TrainingStopped, train

    name = settings.model_name
    seed = settings.demo_model_seed
    sizes = DemoSetSizes(train=settings.demo_model_cases)
    print(f"No approved {name} model: training the demo model on {sizes.train} synthetic "
          f"cases ({settings.demo_model_steps} steps; a few minutes on a CPU). Synthetic "
          "data: not for clinical use.", flush=True)
    folder = write_demo_sets_once(demo_data_dir(settings, seed), sizes, seed=seed,
                                  progress=progress)
    split = load_split(folder)
    # One torch thread: threads that wait for each other on a busy machine are many times
    # slower, and `up` shares the machine with the services it started.
    options = TrainingOptions(steps=settings.demo_model_steps, seed=seed, threads=1)
    try:
        # MLflow prints the run's URL on stdout; `up` keeps stdout for its own lines.
        with contextlib.redirect_stdout(sys.stderr):
            result = train(split, options, registry.tracking_uri(settings),
                           experiment=DEMO_EXPERIMENT, register=name, progress=progress,
                           tags={"neuronova.synthetic": "true",
                                 "neuronova.data_folder": str(folder.resolve())},
                           should_stop=should_stop)
    except TrainingStopped as exc:
        return DemoModel(name, None, False, False, f"none ({exc}; the next `up` trains again)")
    version = result.registered_version
    figures = ", ".join(f"{r.upper()} {result.heldout.dice[r]:.3f}" for r in ("tc", "wt", "et"))
    upgrade_database(settings.sqlalchemy_url)
    with session_factory(settings.sqlalchemy_url)() as session:
        user = get_user(session, DEMO_OWNER)
        if user is None or not user.is_active or version is None:
            return DemoModel(name, version, True, False,
                             f"{name} version {version} trained (held-out Dice {figures}) but "
                             f"not promoted: no active user {DEMO_OWNER!r} to promote it as")
        path = f"neuronova up: promote {name} {version}"
        try:
            gate.promote(settings, session, name, version, gate.Actor(user.username, user.role),
                         "demo model trained by neuronova up on synthetic cases",
                         cli_audit(session, user.username, user.role, path))
        except gate.GateRefused as exc:
            return DemoModel(name, version, True, False,
                             f"{name} version {version} trained (held-out Dice {figures}) but "
                             f"the promotion gate refused it: {exc}")
    return DemoModel(name, version, True, True,
                     f"{name} version {version}, trained now (held-out Dice {figures}), "
                     "promoted through the gate")


__all__ = ["DEMO_EXPERIMENT", "DEMO_OWNER", "DemoModel", "demo_data_dir", "ensure_demo_model"]
