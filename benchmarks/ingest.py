#!/usr/bin/env python3
"""Ingest throughput: STOW-RS through the gate into Orthanc, against straight into Orthanc.

Both modes store the same demo files (the synthetic BraTS-like study: 4 series
of 155 slices, 240×240, 16-bit) into the same private platform (Orthanc,
nginx, guard, API on free loopback ports), with the study deleted from
Orthanc before each run:

* ``straight`` — ``POST /instances`` to Orthanc's REST API from
  ``--threads`` threads with keep-alive sessions (the baseline: no checks);
* ``gate`` — STOW-RS to nginx, one ``multipart/related`` request per series
  (``POST /api/pacs/dicom-web/studies``), as an admin: nginx's
  ``auth_request`` to the guard, the API streams the parts to the ingest
  gate's sandboxed worker processes (``NEURONOVA_INGEST_WORKERS``) and stores
  each accepted file in Orthanc while the next ones are checked.

The gate's workers are started by a warm-up request before the clock runs
(a worker process costs about a second to start, once). Each mode runs
``--repeat`` times in rotation; the median counts. Figures: instances/s and
MB/s of each mode, and ``ratio`` = gate / straight (goal ≥ 0.8).

Run: ``.venv/bin/python benchmarks/ingest.py > ingest.json`` (about a minute;
progress on stderr).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform as host
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import pydicom
import requests

from neuronova_lib.db.users import demo_password
from neuronova_lib.orthanc_store import OrthancStore
from neuronova_lib.wado import multipart_body


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _role(proc: psutil.Process) -> str:
    me = os.getpid()
    if proc.pid == me:
        return "client"
    name = proc.name().lower()
    command = " ".join(proc.cmdline())
    if "orthanc" in name:
        return "orthanc"
    if "nginx" in name:
        return "nginx"
    if "services.api" in command:
        return "api"
    if "services.proxy" in command:
        return "guard"
    if "multiprocessing" in command or "neuronova_lib.ingest.checker" in command:
        return "gate_workers"  # the gate's checkers (before issue 16: multiprocessing children)
    return "other"


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of this process and every descendant, with its role."""
    me = psutil.Process()
    out = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            out[proc.pid] = (_role(proc), times.user + times.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def cpu_ms_per_instance(before: dict[int, tuple[str, float]],
                        after: dict[int, tuple[str, float]], instances: int) -> dict[str, float]:
    roles: dict[str, float] = {}
    for pid, (role, cpu) in after.items():
        roles[role] = roles.get(role, 0.0) + cpu - before.get(pid, (role, 0.0))[1]
    out = {role: round(1e3 * cpu / instances, 3) for role, cpu in sorted(roles.items())}
    out["total"] = round(sum(out.values()), 3)
    return out


def empty_orthanc(store: OrthancStore, study_uids: list[str]) -> None:
    for uid in study_uids:
        study_id = store.find_study(uid)
        if study_id:
            store.session.delete(f"{store.base_url}/studies/{study_id}",
                                 timeout=120).raise_for_status()


def run_straight(settings: Any, files: list[bytes], threads: int) -> float:
    local: dict[int, OrthancStore] = {}

    def put(data: bytes) -> str:
        import threading

        key = threading.get_ident()
        if key not in local:
            local[key] = OrthancStore.from_settings(settings)
        return str(local[key].store(data)["Status"])

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        statuses = list(pool.map(put, files))
    seconds = time.perf_counter() - started
    if statuses.count("Success") != len(files):
        raise SystemExit(f"straight: {len(files) - statuses.count('Success')} not stored")
    return seconds


def run_gate(url: str, token: str, series: list[list[bytes]]) -> float:
    session = requests.Session()
    bodies = [multipart_body([(data, None) for data in files], "application/dicom")
              for files in series]
    started = time.perf_counter()
    for body, content_type in bodies:
        response = session.post(f"{url}/api/pacs/dicom-web/studies", data=body, timeout=600,
                                headers={"Content-Type": content_type,
                                         "Authorization": f"Bearer {token}"})
        if response.status_code != 200:
            raise SystemExit(f"gate: HTTP {response.status_code}: "
                             f"{response.raw.headers.getlist('Warning')[:3]}")
    return time.perf_counter() - started


def warm_up(url: str, token: str, count: int) -> None:
    """Start the gate's worker processes (files of a throwaway study, then deleted)."""
    from pydicom.data import get_testdata_file

    files = []
    for _ in range(count):
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        ds.StudyInstanceUID = pydicom.uid.generate_uid()
        ds.SeriesInstanceUID = pydicom.uid.generate_uid()  # a series UID lives in one study
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files.append(buf.getvalue())
    run_gate(url, token, [files])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["brats", "small"], default="brats")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2,
                        help="gate worker processes (NEURONOVA_INGEST_WORKERS)")
    parser.add_argument("--threads", type=int, default=0,
                        help="straight mode's threads (default: the gate's store threads, "
                             "workers + 2)")
    args = parser.parse_args()
    threads = args.threads or args.workers + 2
    load_before = [round(x, 2) for x in os.getloadavg()]

    from neuronova_lib.demo import write_demo_cases
    from neuronova_lib.demo.phantom import SIZES
    from neuronova_lib.stack.local import local_platform

    with tempfile.TemporaryDirectory(prefix="neuronova-bench-") as tmp:
        workdir = Path(tmp)
        shape, spacing = SIZES[args.size]
        (info,) = write_demo_cases(workdir / "demo", cases=1, seed=4242, shape=shape,
                                   spacing=spacing)
        series = [[p.read_bytes() for p in sorted(folder.glob("*.dcm"))]
                  for folder in info.dicom_dirs.values()]
        files = [data for one in series for data in one]
        megabytes = sum(len(d) for d in files) / 1e6
        log(f"{len(files)} files in {len(series)} series, {megabytes:.1f} MB; starting the "
            "platform…")
        with local_platform(workdir / "home", ingest_workers=args.workers) as local:
            settings = local.settings
            store = OrthancStore.from_settings(settings)
            token = requests.post(f"{local.url}/api/auth/token", timeout=30, data={
                "username": "admin", "password": demo_password(settings, "admin"),
            }).json()["access_token"]
            warm_up(local.url, token, 2 * args.workers)
            runs: dict[str, list[float]] = {"straight": [], "gate": []}
            cpu: dict[str, list[dict[str, float]]] = {"straight": [], "gate": []}
            for rep in range(args.repeat):
                for mode, seconds in runs.items():
                    empty_orthanc(store, [info.study_instance_uid])
                    before = cpu_snapshot()
                    took = (run_straight(settings, files, threads) if mode == "straight"
                            else run_gate(local.url, token, series))
                    cpu[mode].append(cpu_ms_per_instance(before, cpu_snapshot(), len(files)))
                    seconds.append(took)
                    log(f"  {mode} #{rep + 1}: {took:.2f} s, {len(files) / took:.0f} inst/s, "
                        f"CPU ms/instance {cpu[mode][-1]}")
            empty_orthanc(store, [info.study_instance_uid])

    def figures(mode: str) -> dict[str, Any]:
        seconds = runs[mode]
        median = statistics.median(seconds)
        roles = sorted({role for c in cpu[mode] for role in c})
        return {"seconds_median": round(median, 3), "seconds": [round(s, 3) for s in seconds],
                "instances_per_s": round(len(files) / median, 1),
                "mb_per_s": round(megabytes / median, 2),
                "cpu_ms_per_instance_median": {
                    role: round(statistics.median(c.get(role, 0.0) for c in cpu[mode]), 3)
                    for role in roles}}

    straight, gate = figures("straight"), figures("gate")
    print(json.dumps({
        "benchmark": "ingest: STOW-RS through the gate into Orthanc vs straight into Orthanc",
        "data": {"instances": len(files), "series": len(series), "megabytes": round(megabytes, 1),
                 "grid": args.size},
        "gate_workers": args.workers, "straight_threads": threads, "repeat": args.repeat,
        "straight": straight, "gate": gate,
        "ratio": round(gate["instances_per_s"] / straight["instances_per_s"], 3),
        "goal": "ratio >= 0.8",
        "machine": {"cpus": os.cpu_count(), "python": host.python_version(),
                    "load_before": load_before,
                    "load_after": [round(x, 2) for x in os.getloadavg()]},
    }, indent=2))


if __name__ == "__main__":
    main()
