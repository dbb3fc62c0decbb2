#!/usr/bin/env python3
"""Inference per case: the platform's job against the same network in plain MONAI on local files.

The question: what does running the champion through the platform cost per
case (load the study over DICOMweb with the user's access, preprocess, the
network, write the DICOM SEG and SR, store both through the ingest gate, all
on a Dask worker) against the same network applied by a plain MONAI script to
the same case's NIfTI files on a local disk (``LoadImaged``, the model's
orientation, spacing and normalisation, the same sliding window, a threshold)?

It starts the real platform (Orthanc, guard, API, nginx, MLflow, Dask) on free
loopback ports in a temporary home, writes ``--cases`` synthetic demo studies
(BraTS grid, 240×240×155 at 1 mm, by default) and stores them, and makes the
demo model exactly as ``neuronova up`` does (:func:`ensure_demo_model`: train
on synthetic cases, register, promote through the gate: ``--steps``). Then:

* ``platform`` — one inference job per case through ``POST /api/inference``
  as the clinician, after one warm-up job; seconds per stage from the jobs'
  own timings (``load``, ``preprocess``, ``predict``, ``postprocess``,
  ``write``, ``store``; ``model`` is the worker's one-off model load, shown
  apart) and wall seconds from request to result;
* ``plain_monai`` — the same network on the same cases' NIfTI files in this
  process: ``load``, ``preprocess``, ``network``;
* ``ratio`` — platform seconds per case over plain MONAI's, for the whole and
  for the network alone (the same work: it should be near 1);
* ``model`` — the demo model's held-out and hard-set Dice and HD95 from its run.

Prints one JSON document on stdout; progress on stderr. The demo model is
trained on synthetic data: not for clinical use.
Run: ``.venv/bin/python benchmarks/inference.py [--size small] [--cases 2] [--steps 1200]``
(``--steps 20 --train-cases 2 --gate-thresholds-off``: a smoke run whose timings hold, but
whose model is untrained).
"""

from __future__ import annotations

import argparse
import json
import os
import platform as pyplatform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuronova_lib.ai.demo_model import ensure_demo_model  # noqa: E402
from neuronova_lib.db.users import demo_password  # noqa: E402
from neuronova_lib.demo import SIZES, write_demo_cases  # noqa: E402
from neuronova_lib.stack.local import local_platform  # noqa: E402
from neuronova_lib.stack.platform import load_folder  # noqa: E402

#: Platform stages timed per case (``model`` is the one-off load, reported apart).
CASE_STAGES = ("load", "preprocess", "predict", "postprocess", "write", "store")
JOB_TIMEOUT = 900.0


def log(message: str) -> None:
    print(f"[inference] {message}", file=sys.stderr, flush=True)


def mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 4) if values else 0.0


def run_job(url: str, token: str, study: str) -> dict[str, Any]:
    """One job, requested and waited for; its record plus the wall time."""
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    answer = requests.post(f"{url}/api/inference", json={"study": study, "rerun": True},
                           headers=headers, timeout=60)
    answer.raise_for_status()
    job_id = answer.json()["job_id"]
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        job = requests.get(f"{url}/api/inference/{job_id}", headers=headers, timeout=30).json()
        if job["state"] == "done":
            return {**job, "wall_seconds": time.perf_counter() - started}
        if job["state"] == "failed":
            raise RuntimeError(f"job {job_id} failed: {job['error']}")
        time.sleep(0.2)
    raise RuntimeError(f"job {job_id} did not end in {JOB_TIMEOUT:.0f} s")


def plain_monai(model_uri: str, tracking_uri: str, cases: list[Any]) -> dict[str, Any]:
    """The same network in a plain MONAI script on each case's NIfTI files."""
    import torch
    from monai.transforms import (
        Compose,
        ConcatItemsd,
        EnsureChannelFirstd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        Spacingd,
    )

    from neuronova_lib.ai.predict import Segmenter, predict_logits

    segmenter = Segmenter.from_mlflow(model_uri, tracking_uri=tracking_uri)
    config = segmenter.model_config
    keys = ["t1", "t1c", "t2", "flair"]  # the model's order: T1, T1c (BraTS t1ce), T2, FLAIR
    load = Compose([LoadImaged(keys=keys, image_only=True), EnsureChannelFirstd(keys=keys)])
    prepare = Compose([
        ConcatItemsd(keys=keys, name="image", dim=0),
        Orientationd(keys="image", axcodes=config.orientation),
        Spacingd(keys="image", pixdim=config.spacing_mm, mode="bilinear"),
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
    ])
    timings: dict[str, list[float]] = {"load": [], "preprocess": [], "network": []}
    for index, case in enumerate([cases[0], *cases]):  # the first one warms up
        started = time.perf_counter()
        item = load({k: str(case.nifti[k]) for k in keys})
        loaded = time.perf_counter()
        image = prepare(item)["image"]
        prepared = time.perf_counter()
        masks = torch.sigmoid(predict_logits(segmenter.net, image, config, segmenter.device)) \
            > config.threshold
        done = time.perf_counter()
        assert masks.shape[0] == len(config.regions)
        if index:
            timings["load"].append(loaded - started)
            timings["preprocess"].append(prepared - loaded)
            timings["network"].append(done - prepared)
    return {stage: mean(values) for stage, values in timings.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="brats",
                        help="demo study grid (default brats: 240×240×155, 1 mm)")
    parser.add_argument("--cases", type=int, default=2, help="studies timed (default 2)")
    parser.add_argument("--steps", type=int, default=1200,
                        help="demo model training steps (default 1200, as `neuronova up`)")
    parser.add_argument("--train-cases", type=int, default=64,
                        help="demo model training cases (default 64, as `neuronova up`)")
    parser.add_argument("--gate-thresholds-off", action="store_true",
                        help="promote the model whatever its Dice (a smoke run's short "
                        "training cannot meet the gate; its timings still hold)")
    args = parser.parse_args()
    if min(args.cases, args.steps, args.train_cases) < 1:
        parser.error("--cases, --steps and --train-cases must be at least 1")
    shape, spacing = SIZES[args.size]
    with tempfile.TemporaryDirectory(prefix="neuronova-bench-inference-") as tmp:
        root = Path(tmp)
        log(f"writing {args.cases} demo studies ({args.size})")
        cases = write_demo_cases(root / "data", cases=args.cases, seed=11, shape=shape,
                                 spacing=spacing)
        with local_platform(root / "home", mlflow_enabled=True, dask_enabled=True,
                            demo_model_steps=args.steps,
                            demo_model_cases=args.train_cases,
                            **({f"gate_min_dice_{r}": 0.0 for r in ("tc", "wt", "et")}
                               if args.gate_thresholds_off else {})) as platform:
            settings = platform.settings
            for case in cases:
                load_folder(settings, case.directory / "dicom", htj2k=True)
            log(f"making the demo model ({args.steps} steps), as `neuronova up` does")
            started = time.perf_counter()
            model = ensure_demo_model(settings, progress=True)
            made_s = time.perf_counter() - started
            if not model.served:
                log(model.message)
                return 1
            from neuronova_lib.ai import registry

            served = registry.served_version(settings)
            metrics = registry.run_metrics(registry.mlflow_client(settings), settings,
                                           served.run_id)
            token = requests.post(f"{platform.url}/api/auth/token", timeout=30, data={
                "username": "clinician",
                "password": demo_password(settings, "clinician")}).json()["access_token"]
            log("warm-up job")
            warm = run_job(platform.url, token, cases[0].study_instance_uid)
            jobs = []
            for case in cases:
                log(f"job on {case.case_id}")
                jobs.append(run_job(platform.url, token, case.study_instance_uid))
            log("plain MONAI on the same cases' NIfTI files")
            baseline = plain_monai(served.model_uri, registry.tracking_uri(settings), cases)
    per_stage = {stage: mean([j["timings"][stage] for j in jobs]) for stage in CASE_STAGES}
    platform_total = sum(per_stage.values())
    baseline_total = sum(baseline.values())
    result = {
        "benchmark": "inference",
        "machine": {"cpus": os.cpu_count(), "python": pyplatform.python_version(),
                    "device": "cpu"},
        "study": {"size": args.size, "shape": list(shape), "spacing_mm": list(spacing),
                  "cases": args.cases},
        "model": {
            "name": served.name, "version": served.version, "run_id": served.run_id,
            "steps": args.steps, "train_cases": args.train_cases,
            "gate_thresholds_off": args.gate_thresholds_off,
            "made_seconds": round(made_s, 1),
            "heldout": {k: round(v, 4) for k, v in sorted(metrics.items())
                        if k.startswith(("heldout_dice", "heldout_hd95"))},
            "hard": {k: round(v, 4) for k, v in sorted(metrics.items())
                     if k.startswith(("hard_dice", "hard_hd95"))},
            "not_for_clinical_use": True,
        },
        "platform": {
            "seconds_per_case": per_stage,
            "total_seconds_per_case": round(platform_total, 4),
            "wall_seconds_per_case": mean([j["wall_seconds"] for j in jobs]),
            "model_load_seconds": warm["timings"]["model"],
        },
        "plain_monai": {"seconds_per_case": baseline,
                        "total_seconds_per_case": round(baseline_total, 4)},
        "ratio": {
            "platform_vs_plain_monai": round(platform_total / baseline_total, 3),
            "wall_vs_plain_monai": round(
                mean([j["wall_seconds"] for j in jobs]) / baseline_total, 3),
            "network_vs_plain_monai": round(per_stage["predict"] / baseline["network"], 3),
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
