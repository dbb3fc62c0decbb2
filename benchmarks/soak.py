#!/usr/bin/env python3
"""Soak: does any process's memory keep growing while the platform serves frames?

Serves a fixed number of WADO-RS frame requests (1 million by default) through the
platform's secure path — wrk → nginx → guard (bearer token, audit row,
``X-Accel-Redirect``) → nginx → NeuroNova's Orthanc plugin — under 32 connections,
every distinct demo frame in turn (``wrk_frames.lua``), then as many through
Orthanc's own C++ frame route (``/instances/{id}/frames/0/raw``, basic auth,
straight to Orthanc) as the baseline in the same run. Between wrk runs of a few
seconds it samples the resident memory of Orthanc, the guard, the API and nginx
(master and workers), and fits each process's memory against the requests served
over the second half of each soak (least squares): KB per 1,000 requests. A
process that levelled off shows about 0; a leak shows its size per request.

Why segments: wrk cannot stop after a number of requests, so the soak runs wrk for
a few seconds at a time until the count is reached, and each sample sits at an
exact request count (wrk's own total for each run).

It prints one JSON document on stdout (progress on stderr); exit status 1 when any
request failed. ``--requests 100000`` for a quick run; ``--size small`` for small
demo frames. ``soak_route`` is also what ``tests/test_soak_e2e.py`` runs in CI.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests

# Run as a script (`python benchmarks/soak.py`), this file's folder is on sys.path, not the
# checkout; the shared wrk helpers live in the sibling benchmark.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.proxy_overhead import _descendants, log, require_wrk, run_wrk  # noqa: E402
from benchmarks.proxy_overhead import Target as _Target  # noqa: E402
from neuronova_lib.config import Settings  # noqa: E402
from neuronova_lib.orthanc_store import OrthancStore  # noqa: E402
from neuronova_lib.security.roles import Role  # noqa: E402
from neuronova_lib.security.secret_store import orthanc_service_account  # noqa: E402
from neuronova_lib.security.tokens import token_service  # noqa: E402
from neuronova_lib.stack.local import LocalPlatform, local_platform  # noqa: E402
from neuronova_lib.stack.supervisor import Supervisor  # noqa: E402

PREFIX = "/api/pacs/dicom-web"
#: What a viewer asks for: the frames as stored (HTJ2K for the demo), correctly labelled.
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
#: Processes whose memory is sampled, by the supervisor's service names.
PROCESSES = {"orthanc": "orthanc", "guard": "proxy", "api": "api", "nginx": "nginx"}
#: The issue's bound: Orthanc's memory over the second half of a 1-million-request soak.
TARGET_ORTHANC_KB_PER_REQUEST = 0.05
DEFAULT_REQUESTS = 1_000_000
CONNECTIONS = 32


@dataclass(frozen=True)
class StoredFrame:
    """Frame 1 of one stored instance, by its DICOM UIDs and its Orthanc identifier."""

    study: str
    series: str
    sop: str
    orthanc_id: str

    @property
    def secure_path(self) -> str:
        return (f"{PREFIX}/studies/{self.study}/series/{self.series}"
                f"/instances/{self.sop}/frames/1")

    @property
    def raw_path(self) -> str:
        return f"/instances/{self.orthanc_id}/frames/0/raw"


@dataclass(frozen=True)
class Route:
    """One way in: base URL, headers, and the path of each frame."""

    name: str
    base_url: str
    headers: dict[str, str]
    path: Callable[[StoredFrame], str]


def stored_frames(store: OrthancStore) -> list[StoredFrame]:
    """Every instance in Orthanc, study by study and series by series (Orthanc's order)."""
    frames = []
    for study in store.get_json("/studies?expand"):
        study_uid = study["MainDicomTags"]["StudyInstanceUID"]
        for series in store.get_json(f"/studies/{study['ID']}/series?expand"):
            series_uid = series["MainDicomTags"]["SeriesInstanceUID"]
            for instance in store.get_json(f"/series/{series['ID']}/instances?expand"):
                frames.append(StoredFrame(study_uid, series_uid,
                                          instance["MainDicomTags"]["SOPInstanceUID"],
                                          instance["ID"]))
    return frames


def routes(settings: Settings, token: str) -> dict[str, Route]:
    """The secure path (what users get) and Orthanc's own raw frame route (the baseline)."""
    account = orthanc_service_account(settings.secrets_dir)
    basic = base64.b64encode(f"{account['username']}:{account['password']}".encode()).decode()
    return {
        "secure_path": Route("secure_path", settings.public_url,
                             {"Authorization": f"Bearer {token}", "Accept": FRAME_ACCEPT},
                             lambda frame: frame.secure_path),
        "orthanc_raw": Route("orthanc_raw", settings.orthanc_url,
                             {"Authorization": f"Basic {basic}"},
                             lambda frame: frame.raw_path),
    }


def check_routes(table: dict[str, Route], frame: StoredFrame) -> dict[str, int]:
    """One request by hand per route: 200, and the secure answer holds Orthanc's raw frame."""
    bodies = {}
    for route in table.values():
        response = requests.get(route.base_url + route.path(frame), headers=route.headers,
                                timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"{route.name}: HTTP {response.status_code}: {response.text[:300]}")
        bodies[route.name] = response.content
    if bodies["orthanc_raw"] not in bodies["secure_path"]:
        raise RuntimeError("the secure path's answer does not hold the stored frame")
    return {name: len(body) for name, body in bodies.items()}


# -- memory ----------------------------------------------------------------------------


def rss_kb(pids: Iterable[int]) -> int:
    """Resident memory of these processes together (VmRSS), in KB; ended ones count 0."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def platform_memory(supervisor: Supervisor) -> dict[str, int]:
    """KB resident per platform process, each with its children (nginx's workers)."""
    pids = supervisor.pids()
    return {name: rss_kb(_descendants(pids[service])) for name, service in PROCESSES.items()}


def slope_per_1000(requests_done: list[int], kb: list[int]) -> float:
    """Least-squares KB per 1,000 requests over the second half of the samples."""
    half = len(requests_done) // 2
    x, y = np.asarray(requests_done[half:], float), np.asarray(kb[half:], float)
    if len(x) < 2 or x[-1] == x[0]:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0] * 1000)


# -- load ------------------------------------------------------------------------------


def write_plan(path: Path, route: Route, frames: list[StoredFrame]) -> Path:
    """wrk_frames.lua's input (kept private: it holds a token or the service password)."""
    lines = [f"H {name}: {value}" for name, value in route.headers.items()]
    lines += [route.path(frame) for frame in frames]
    path.touch(mode=0o600)
    path.write_text("\n".join(lines) + "\n")
    return path


def soak_route(wrk: str, route: Route, frames: list[StoredFrame], supervisor: Supervisor,
               total: int, work: Path, *, connections: int = CONNECTIONS,
               segment_s: int = 5, warmup_s: int = 2) -> dict[str, Any]:
    """Serve ``total`` requests (or a few more) on one route; memory sampled between wrk runs.

    A short unmeasured warm-up first, so the first sample is not taken on cold caches.
    """
    plan = write_plan(work / f"plan-{route.name}.txt", route, frames)
    target = _Target(route.name, route.base_url, "", "")
    if warmup_s > 0:
        run_wrk(wrk, target, plan, connections, warmup_s)
    served, seconds, errors = 0, 0.0, {"non_2xx": 0, "socket": 0}
    samples: list[tuple[int, dict[str, int]]] = [(0, platform_memory(supervisor))]
    rate = 0.0
    while served < total:
        left = total - served
        duration = segment_s if rate == 0 else max(1, min(segment_s, math.ceil(left / rate)))
        raw = run_wrk(wrk, target, plan, connections, duration)
        served += int(raw["requests"])
        seconds += raw["duration_us"] / 1e6
        errors["non_2xx"] += raw["errors"]["status"]
        errors["socket"] += sum(raw["errors"][k] for k in ("connect", "read", "write", "timeout"))
        rate = served / seconds
        samples.append((served, platform_memory(supervisor)))
        log(f"  {route.name}: {served:,} requests, {rate:,.0f}/s, "
            f"Orthanc {samples[-1][1]['orthanc'] / 1024:,.0f} MB")
    counts = [n for n, _ in samples]
    memory = {
        name: {
            "start_kb": samples[0][1][name],
            "end_kb": samples[-1][1][name],
            "slope_kb_per_1000_requests": round(slope_per_1000(counts, [m[name] for _, m in samples]), 3),
        }
        for name in PROCESSES
    }
    return {"requests": served, "errors": errors, "errors_total": sum(errors.values()),
            "frames_per_s": round(served / seconds, 1), "duration_s": round(seconds, 1),
            "samples": len(samples), "memory": memory}


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS,
                        help=f"requests per route (default {DEFAULT_REQUESTS:,})")
    parser.add_argument("--connections", type=int, default=CONNECTIONS,
                        help=f"wrk connections (default {CONNECTIONS})")
    parser.add_argument("--cases", type=int, default=2,
                        help="demo cases stored (4 series each; default 2, as `make up`)")
    parser.add_argument("--size", choices=("brats", "small"), default="brats",
                        help="demo size (default brats: 155 slices of 240x240 per series)")
    parser.add_argument("--uncompressed", action="store_true",
                        help="store the demo as written, not as HTJ2K lossless")
    parser.add_argument("--segment", type=int, default=5,
                        help="seconds of load between memory samples (default 5)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary platform home and print its path")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.connections < 1 or args.cases < 1 or args.segment < 1:
        parser.error("--requests, --connections, --cases and --segment must be positive")
    return args


def load_demo_frames(local: LocalPlatform, args: argparse.Namespace) -> list[StoredFrame]:
    """The demo studies as ``make up`` stores them (HTJ2K lossless unless --uncompressed)."""
    from neuronova_lib.stack.platform import ensure_demo_files, load_folder

    folder = ensure_demo_files(local.settings, args.cases)
    store = OrthancStore.from_settings(local.settings)
    log(f"storing the demo ({args.cases} case(s), {args.size}) in Orthanc")
    load_folder(store, folder, htj2k=not args.uncompressed, workers=2)
    return stored_frames(store)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = require_wrk()
    home = Path(tempfile.mkdtemp(prefix="neuronova-soak-"))
    try:
        log("starting the platform (Orthanc, guard, API, nginx)")
        with local_platform(home / "platform", demo_size=args.size) as local:
            frames = load_demo_frames(local, args)
            token, _ = token_service(local.settings).mint("soak", Role.clinician, "access",
                                                         ttl=12 * 3600)
            table = routes(local.settings, token)
            body_bytes = check_routes(table, frames[0])
            results = {}
            for name, route in table.items():
                log(f"{name}: {args.requests:,} requests, {args.connections} connections, "
                    f"{len(frames)} distinct frames")
                results[name] = soak_route(wrk, route, frames, local.supervisor, args.requests,
                                           home, connections=args.connections,
                                           segment_s=args.segment)
    finally:
        if args.keep:
            log(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    secure, raw = results["secure_path"], results["orthanc_raw"]
    orthanc_per_request = secure["memory"]["orthanc"]["slope_kb_per_1000_requests"] / 1000
    report = {
        "benchmark": "soak",
        "unit": "memory slope = KB resident per 1,000 requests over the second half (least squares)",
        "parameters": {"requests_per_route": args.requests, "connections": args.connections,
                       "distinct_frames": len(frames), "demo": f"{args.cases} case(s), {args.size}",
                       "transfer_syntax": "as written" if args.uncompressed else "HTJ2K lossless",
                       "accept": FRAME_ACCEPT, "body_bytes_first_frame": body_bytes,
                       "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "results": results,
        "ratios": {"frames_per_s_secure_vs_raw":
                   round(secure["frames_per_s"] / raw["frames_per_s"], 3)},
        "target": {"orthanc_kb_per_request_max": TARGET_ORTHANC_KB_PER_REQUEST,
                   "orthanc_kb_per_request": round(orthanc_per_request, 5),
                   "met": orthanc_per_request <= TARGET_ORTHANC_KB_PER_REQUEST},
        "errors_total": secure["errors_total"] + raw["errors_total"],
    }
    print(json.dumps(report, indent=2))
    return 1 if report["errors_total"] else 0


if __name__ == "__main__":
    sys.exit(main())
