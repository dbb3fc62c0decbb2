"""``neuronova train``: train the tumour segmentation model and log the run to MLflow.

Examples::

    neuronova train --demo 64 --steps 1200           # synthetic cases, this CPU
    neuronova train --data /data/BraTS2021 --steps 20000 --register brain-tumor-seg   # a GPU
    neuronova train --studies UID1 UID2 ... --labels labels/ --steps 1200  # platform studies

The command checks the MLflow server and the data before it trains, shows a
progress bar, and ends by printing the run id and the held-out figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def build_parser(prog: str = "neuronova train") -> argparse.ArgumentParser:
    """Argument parser of the command (a parent CLI may reuse it)."""
    from .demo_sets import DemoSetSizes
    from .tracking import DEFAULT_EXPERIMENT

    sizes = DemoSetSizes()
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a MONAI UNet (T1, T1c, T2, FLAIR in; tumour core, whole tumour, "
        "enhancing tumour out), evaluate it on held-out cases and log everything to MLflow. "
        "Models trained on the synthetic demo data are not for clinical use.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="FOLDER",
                        help="BraTS 2021 layout: FOLDER/<case>/<case>_t1.nii.gz, _t1ce, _t2, "
                        "_flair, _seg (or train/, heldout/, hard/ folders of such cases)")
    source.add_argument("--demo", type=int, metavar="N",
                        help="generate N synthetic training cases, plus held-out and hard "
                        "sets, into --data-dir and train on them")
    source.add_argument("--studies", nargs="+", metavar="UID",
                        help="the platform's studies, read over DICOMweb with your access "
                        "(NEURONOVA_URL and NEURONOVA_TOKEN, or --user), with their label maps "
                        "from --labels; written to --data-dir in the BraTS layout")
    parser.add_argument("--labels", type=Path, metavar="DIR",
                        help="--studies: folder of <StudyInstanceUID>_seg.nii.gz label maps "
                        "(BraTS values on the T1 series' grid)")
    parser.add_argument("--url", metavar="URL",
                        help="--studies: the platform (default NEURONOVA_URL)")
    parser.add_argument("--user", metavar="NAME",
                        help="--studies: sign in as NAME, password on stdin (default: "
                        "NEURONOVA_TOKEN, or the hub's token in a notebook)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="where --demo writes its cases (default "
                        "$NEURONOVA_HOME/training/demo-s<seed>)")
    parser.add_argument("--heldout-cases", type=int, default=sizes.heldout, metavar="M",
                        help=f"--demo: held-out cases (default {sizes.heldout})")
    parser.add_argument("--hard-cases", type=int, default=sizes.hard, metavar="K",
                        help=f"--demo: hard-set cases (default {sizes.hard})")
    parser.add_argument("--heldout-fraction", type=float, default=0.2, metavar="F",
                        help="--data without train/ and heldout/ folders: share of cases "
                        "held out (default 0.2)")
    parser.add_argument("--steps", type=int, default=1200,
                        help="optimiser steps: the training length (default 1200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
    parser.add_argument("--batch-size", type=int, default=2, help="patches per step")
    parser.add_argument("--learning-rate", type=float, default=3e-3, metavar="LR",
                        help="Adam's initial rate, cosine decay to a tenth (default 3e-3)")
    parser.add_argument("--patch", type=int, default=64, metavar="N",
                        help="training patch and sliding window: N^3 voxels on the 2 mm grid "
                        "(default 64; 48 trains ~1.7x faster on a CPU)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (default: torch's choice; 1 is faster on "
                        "a machine shared with other work)")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="default: cuda when present, else cpu")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow server (default MLFLOW_TRACKING_URI, else the platform's "
                        "/mlflow/)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                        help=f"MLflow experiment (default {DEFAULT_EXPERIMENT})")
    parser.add_argument("--register", metavar="NAME",
                        help="register the model as a new version of NAME (aliases are moved "
                        "only by `neuronova models promote`)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 on success, 2 for bad arguments or data, 1 when MLflow or training fails."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.demo is not None and args.demo < 1:
        parser.error(f"--demo needs at least 1 case, got {args.demo}")
    if args.studies and args.labels is None:
        parser.error("--studies needs --labels DIR (the studies' label maps)")
    if not 0 < args.learning_rate < 1:
        parser.error(f"--learning-rate must lie between 0 and 1, got {args.learning_rate}")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.seed < 0:
        parser.error(f"--seed must be non-negative, got {args.seed}")
    if args.heldout_cases < 1 or args.hard_cases < 0:
        parser.error(f"--heldout-cases must be at least 1 and --hard-cases at least 0, got "
                     f"{args.heldout_cases} and {args.hard_cases}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device here (a CPU build of torch, "
                         "or no GPU); leave --device out to use the CPU")

    from ..config import get_settings
    from .dataset import DatasetError, load_split
    from .tracking import TrackingUnavailable, check_reachable, resolve_tracking_uri

    settings = get_settings()
    tracking_uri = resolve_tracking_uri(args.tracking_uri, settings)
    try:
        check_reachable(tracking_uri)  # before minutes of data generation
    except TrackingUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    started = time.perf_counter()
    synthetic = args.demo is not None
    try:
        if synthetic:
            folder = _write_demo(args, settings.home)
        elif args.studies:
            folder = _export_studies(args, settings.home)
        else:
            folder = args.data
        split = load_split(folder, heldout_fraction=args.heldout_fraction, seed=args.seed)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, LookupError, OSError) as exc:  # --studies: sign-in, access, a study
        print(f"error: reading the platform's studies: {exc}", file=sys.stderr)
        return 1

    from .model_config import ModelConfig
    from .train import TrainingOptions, train

    if args.patch < 16 or args.patch % 8:
        parser.error(f"--patch must be a multiple of 8, at least 16, got {args.patch}")
    options = TrainingOptions(steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                              learning_rate=args.learning_rate,
                              config=ModelConfig(roi_size=(args.patch,) * 3),
                              device=args.device, threads=args.threads)
    tags = {"neuronova.data_folder": str(Path(folder).resolve()),
            "neuronova.synthetic": str(synthetic).lower()}
    try:
        # MLflow prints the run's URL on stdout; keep stdout for the summary (--json).
        with contextlib.redirect_stdout(sys.stderr):
            result = train(split, options, tracking_uri, experiment=args.experiment,
                           register=args.register, progress=not args.quiet, tags=tags)
    except TrackingUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = time.perf_counter() - started
    summary = {
        "run_id": result.run_id,
        "experiment_id": result.experiment_id,
        "model_uri": result.model_uri,
        "tracking_uri": result.tracking_uri,
        "registered": ({"name": args.register, "version": result.registered_version}
                       if args.register else None),
        "steps": result.steps,
        "train_seconds": round(result.train_seconds, 1),
        "total_seconds": round(total, 1),
        "metrics": {k: round(v, 4) for k, v in sorted(result.metrics.items())},
        "synthetic": synthetic,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary, result)
    return 0


def _export_studies(args: argparse.Namespace, home: Path) -> Path:
    import shutil

    from ..dicomweb.session import connect
    from .platform_data import export_studies

    folder = args.data_dir or home / "training" / "platform"
    if folder.is_dir():  # cases of an earlier --studies run must not mix with these
        for old in folder.glob("platform-*"):
            shutil.rmtree(old)
    password = sys.stdin.readline().rstrip("\n") if args.user else None
    client = connect(args.url, username=args.user, password=password)
    with client:
        return export_studies(client, args.studies, args.labels, folder,
                              progress=not args.quiet)


def _write_demo(args: argparse.Namespace, home: Path) -> Path:
    from .demo_sets import DemoSetSizes, write_demo_sets_once

    folder = args.data_dir or home / "training" / f"demo-s{args.seed}"
    sizes = DemoSetSizes(train=args.demo, heldout=args.heldout_cases, hard=args.hard_cases)
    return write_demo_sets_once(folder, sizes, seed=args.seed, progress=not args.quiet)


def _print_summary(summary: dict, result: object) -> None:
    metrics = summary["metrics"]
    print(f"run {summary['run_id']}  (experiment {summary['experiment_id']}, "
          f"{summary['tracking_uri']})")
    print(f"model {summary['model_uri']}")
    if summary["registered"]:
        print(f"registered {summary['registered']['name']} version "
              f"{summary['registered']['version']} (promote it with `neuronova models promote`)")
    print(f"{summary['steps']} steps in {summary['train_seconds']:.0f} s "
          f"({summary['total_seconds']:.0f} s in all)")
    for prefix, title in (("heldout", "held-out"), ("hard", "hard set")):
        if f"{prefix}_dice_tc" not in metrics:
            continue
        cases = int(metrics[f"{prefix}_cases"])
        print(f"{title} ({cases} cases):  " + "  ".join(
            f"{r.upper()} Dice {metrics[f'{prefix}_dice_{r}']:.3f} "
            f"HD95 {metrics[f'{prefix}_hd95_{r}']:.1f} mm" for r in ("tc", "wt", "et")))
    if summary["synthetic"]:
        print("trained on synthetic demonstration data: not for clinical use")
