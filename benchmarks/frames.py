#!/usr/bin/env python3
"""Frames at nginx speed: the frame store and nginx's cached decisions against their limits.

One run, one machine, one demo study stored as HTJ2K through the ingest gate (four
series of 155 frames of about 64 KB), the viewer's request
(``Accept: multipart/related; type="application/octet-stream"; transfer-syntax=*``).
wrk (``wrk_frames.lua``) cycles through the 155 frames of one series at 1, 8 and 32
connections for each case:

* ``a_nginx_files``  — nginx serving the same stored bodies from files, no auth: the limit.
* ``b_store_cached`` — the platform: nginx → cached guard decision → frame store file.
* ``c_store_uncached`` — the same with the decision cache off: the guard decides each request.
* ``d_orthanc_dicomweb`` — Orthanc's own DICOMweb plugin, straight to Orthanc (basic auth,
  ``type="application/octet-stream"``: Debian's plugin answers ``transfer-syntax=*``
  with 500 for HTJ2K, so it sends the stored bytes under its own label).
* ``e_before`` — the path before the frame store: nginx → guard → ``X-Accel-Redirect`` →
  Orthanc's NeuroNova plugin.

(a), (c) and (e) run on extra nginx processes rendered from the same template with the
settings of that case, in front of the same guard and Orthanc. The goals of issue 13:
(b) ≥ 0.5 × (a) and ≥ 10 × (d) at 8 connections (``ratios``).

Then the viewer-shaped run: every frame of the study's four series through the
platform, 8 requests in flight (one keep-alive connection each), time to the first and
to the last frame, against reading the same stored bodies from local files the same way.

Prints one JSON document; progress on stderr. The machine is shared: ratios matter.
Run: ``.venv/bin/python benchmarks/frames.py [--duration 5] [--connections 1,8,32]``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from proxy_overhead import Target, require_wrk, run_wrk, summarise

from neuronova_lib.config import Settings
from neuronova_lib.frames import store as frame_store
from neuronova_lib.security.secret_store import orthanc_service_account
from neuronova_lib.security.tokens import token_service
from neuronova_lib.stack.local import local_platform
from neuronova_lib.stack.platform import load_folder
from neuronova_lib.stack.render import _nginx_user, frame_store_types, render_nginx

PREFIX = "/api/pacs/dicom-web"
VIEWER_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
ORTHANC_ACCEPT = 'multipart/related; type="application/octet-stream"'


def log(message: str) -> None:
    print(f"[frames] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per case and connection count, interleaved (median kept)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each point")
    parser.add_argument("--connections", default="1,8,32", help="wrk connection counts")
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    parser.add_argument("--diagnostics", action="store_true",
                        help="also (b) without its access log and (b) without auth_request, "
                        "to see what each costs")
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def study_frames(settings: Settings, folder: Path) -> list[list[tuple[str, str, str]]]:
    """(study, series, sop) of each slice, per series, in slice order."""
    series: dict[str, list[tuple[int, tuple[str, str, str]]]] = {}
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        series.setdefault(ds.SeriesInstanceUID, []).append(
            (int(ds.InstanceNumber), (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)))
    return [[uids for _, uids in sorted(items)] for items in series.values()]


def frame_path(uids: tuple[str, str, str]) -> str:
    return f"studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}/frames/1"


def wait_for_store(store: frame_store.FrameStore, frames: list[tuple[str, str, str]]) -> None:
    deadline = time.monotonic() + 300
    label = "1.2.840.10008.1.2.4.201"
    while not all(store.frame_path(*uids, 1, label).exists() for uids in frames):
        if time.monotonic() > deadline:
            raise RuntimeError("the Orthanc plugin did not write the frame store in 300 s")
        time.sleep(0.5)


class ExtraNginx:
    """One more nginx in front of the same platform, for a case of its own."""

    def __init__(self, name: str, conf: str, work: Path) -> None:
        self.name, self.work = name, work
        self.path = work / f"nginx-{name}.conf"
        self.path.write_text(conf)
        os.chmod(self.path, 0o600)
        (work / f"nginx-{name}").mkdir(exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ExtraNginx:
        self.process = subprocess.Popen(
            ["nginx", "-c", str(self.path), "-p", str(self.work / f"nginx-{self.name}"),
             "-e", "/dev/null"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        if self.process.poll() is not None:
            raise RuntimeError(f"nginx ({self.name}) did not start: "
                               f"{self.process.stderr.read().decode() if self.process.stderr else ''}")
        return self

    def __exit__(self, *_: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


def platform_nginx(settings: Settings, name: str, port: int, work: Path,
                   edit: Any = None, **changes: object) -> ExtraNginx:
    """The platform's own nginx config for other settings, on another port and pid file;
    ``edit`` changes its text (the diagnostic cases)."""
    variant = settings.model_copy(update={"port": port, **changes})
    conf = render_nginx(variant, work / f"rendered-{name}.conf").read_text()
    conf = conf.replace(f"pid {settings.run_dir}/nginx.pid;", f"pid {work}/nginx-{name}.pid;")
    if edit is not None:
        conf = edit(conf)
    return ExtraNginx(name, conf, work)


def _without_store_log(conf: str) -> str:
    return "\n".join("access_log off;" if "nginx-frames.log" in line else line
                     for line in conf.split("\n"))


def _without_auth(conf: str) -> str:
    return "\n".join(line for line in conf.split("\n")
                     if "auth_request /_neuronova_decide" not in line)


def files_nginx(settings: Settings, port: int, work: Path) -> ExtraNginx:
    """(a): nginx serving the stored bodies as plain files, no auth, same types and sendfile."""
    types = "\n".join(f"        '{t}' {ext};" for t, ext in frame_store_types()[0])
    user = _nginx_user()
    conf = f"""
{f"user {user};" if user else ""}
worker_processes 2;
daemon off;
pid {work}/nginx-files.pid;
error_log /dev/null;
events {{ worker_connections 2048; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000;
    client_body_temp_path {work}/nginx-files-tmp;
    proxy_temp_path {work}/nginx-files-tmp;
    fastcgi_temp_path {work}/nginx-files-tmp;
    uwsgi_temp_path {work}/nginx-files-tmp;
    scgi_temp_path {work}/nginx-files-tmp;
    server {{
        listen 127.0.0.1:{port};
        location /files/ {{
            alias {settings.frames_dir}/;
            types {{
{types}
            }}
        }}
    }}
}}
"""
    return ExtraNginx("files", conf, work)


def write_plan(path: Path, authorization: str | None, accept: str, paths: list[str]) -> Path:
    lines = ([f"H Authorization: {authorization}"] if authorization else []) + [f"H Accept: {accept}"]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines + paths) + "\n")
    return path


def check(url: str, headers: dict[str, str], frame: bytes) -> dict[str, Any]:
    """One request by hand before the load: a wrong answer at 50,000/s would look like speed."""
    import requests

    answer = requests.get(url, headers=headers, timeout=30)
    if answer.status_code != 200 or frame not in answer.content:
        raise RuntimeError(f"{url}: HTTP {answer.status_code}, frame not in the answer: "
                           f"{answer.text[:200]}")
    return {"content_type": answer.headers.get("content-type"), "body_bytes": len(answer.content)}


def viewer_run(port: int | None, paths: list[str], headers: dict[str, str],
               files: list[Path] | None = None, workers: int = 8) -> dict[str, Any]:
    """All ``paths`` with ``workers`` requests in flight (one keep-alive connection each),
    or the same count of ``files`` read from disk: seconds to the first and the last frame."""
    items = files if files is not None else paths
    lock, cursor, firsts = threading.Lock(), [0], []
    total = [0]
    start = time.perf_counter()

    def work() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30) if port else None
        while True:
            with lock:
                if cursor[0] >= len(items):
                    break
                item = items[cursor[0]]
                cursor[0] += 1
            if conn is not None:
                conn.request("GET", str(item), headers=headers)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"GET {item}: HTTP {response.status}")
            else:
                body = Path(item).read_bytes()
            with lock:
                total[0] += len(body)
                if not firsts:
                    firsts.append(time.perf_counter() - start)
        if conn is not None:
            conn.close()

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(work) for _ in range(workers)]:
            future.result()
    last = time.perf_counter() - start
    return {"frames": len(items), "first_frame_ms": round(firsts[0] * 1000, 2),
            "last_frame_ms": round(last * 1000, 1), "frames_per_s": round(len(items) / last, 1),
            "bytes": total[0]}


def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    wrk = require_wrk()
    from neuronova_lib.demo import write_demo_cases

    demo = home / "demo"
    log("writing one demo study (4 series x 155 slices)")
    write_demo_cases(demo, cases=1, seed=7, overwrite=True)
    with local_platform(home / "platform", mlflow_enabled=False) as local:
        settings = local.settings
        log("storing it as HTJ2K through the ingest gate")
        load_folder(settings, demo)
        series = study_frames(settings, demo)
        store = frame_store.FrameStore(settings.frames_dir)
        wait_for_store(store, [u for s in series for u in s])
        token, _ = token_service(settings).mint("clinician", "clinician", "access", 3600)
        bearer = f"Bearer {token}"
        account = orthanc_service_account(settings.secrets_dir)
        basic = "Basic " + base64.b64encode(
            f"{account['username']}:{account['password']}".encode()).decode()
        one = series[0]
        label = "1.2.840.10008.1.2.4.201"
        sample = frame_store.frame_of(store.frame_path(*one[0], 1, label).read_bytes())
        store_files = [str(store.frame_path(*u, 1, label).relative_to(settings.frames_dir))
                       for u in one]
        work = home / "work"
        work.mkdir()
        (work / "nginx-files-tmp").mkdir()
        ports = {name: free_port() for name in ("files", "uncached", "before", "nolog", "noauth")}
        cases: dict[str, dict[str, Any]] = {
            "a_nginx_files": {"base": f"http://127.0.0.1:{ports['files']}", "auth": None,
                              "accept": VIEWER_ACCEPT,
                              "paths": [f"/files/{p}" for p in store_files]},
            "b_store_cached": {"base": settings.local_url, "auth": bearer, "accept": VIEWER_ACCEPT,
                               "paths": [f"{PREFIX}/{frame_path(u)}" for u in one]},
            "c_store_uncached": {"base": f"http://127.0.0.1:{ports['uncached']}", "auth": bearer,
                                 "accept": VIEWER_ACCEPT,
                                 "paths": [f"{PREFIX}/{frame_path(u)}" for u in one]},
            "d_orthanc_dicomweb": {"base": settings.orthanc_url, "auth": basic,
                                   "accept": ORTHANC_ACCEPT,
                                   "paths": [f"/dicom-web/{frame_path(u)}" for u in one]},
            "e_before": {"base": f"http://127.0.0.1:{ports['before']}", "auth": bearer,
                         "accept": VIEWER_ACCEPT,
                         "paths": [f"{PREFIX}/{frame_path(u)}" for u in one]},
        }
        if args.diagnostics:
            for name, port in (("b_diag_no_store_log", ports["nolog"]),
                               ("b_diag_no_auth_request", ports["noauth"])):
                cases[name] = {**cases["b_store_cached"], "base": f"http://127.0.0.1:{port}"}
        connections = [int(c) for c in args.connections.split(",")]
        results: dict[str, Any] = {}
        with files_nginx(settings, ports["files"], work), \
                platform_nginx(settings, "uncached", ports["uncached"], work,
                               frame_decision_cache=False), \
                platform_nginx(settings, "before", ports["before"], work, frame_store=False), \
                platform_nginx(settings, "nolog", ports["nolog"], work, _without_store_log), \
                platform_nginx(settings, "noauth", ports["noauth"], work, _without_auth):
            time.sleep(0.5)
            targets = {}
            for name, case in cases.items():
                headers = {"Accept": case["accept"], **({"Authorization": case["auth"]}
                                                         if case["auth"] else {})}
                checked = check(case["base"] + case["paths"][0], headers, sample)
                plan = write_plan(work / f"plan-{name}", case["auth"], case["accept"], case["paths"])
                targets[name] = (Target(name, case["base"], "", case["auth"] or ""), plan, checked)
                results[name] = {"check": checked}
            # The machine is shared and its load moves: the cases take turns, in rounds, and
            # each point is the round with the median throughput.
            for conns in connections:
                rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
                for number in range(args.rounds):
                    for name, (target, plan, checked) in targets.items():
                        log(f"{name}: {conns} connection(s), round {number + 1}/{args.rounds}")
                        if args.warmup:
                            run_wrk(wrk, target, plan, conns, args.warmup)
                        point = summarise(run_wrk(wrk, target, plan, conns, args.duration), {},
                                          checked["body_bytes"])
                        point.pop("cpu_ms_per_frame", None)
                        rounds[name].append(point)
                for name, points in rounds.items():
                    ranked = sorted(points, key=lambda p: p["frames_per_s"])
                    chosen = dict(ranked[len(ranked) // 2])
                    chosen["rounds_frames_per_s"] = [p["frames_per_s"] for p in points]
                    results[name][str(conns)] = chosen
            log("viewer-shaped: the whole study, 8 requests in flight")
            every = [u for s in series for u in s]
            viewer = {
                "platform_cached": viewer_run(settings.port, [f"{PREFIX}/{frame_path(u)}"
                                                              for u in every],
                                              {"Accept": VIEWER_ACCEPT, "Authorization": bearer}),
                "before": viewer_run(ports["before"], [f"{PREFIX}/{frame_path(u)}" for u in every],
                                     {"Accept": VIEWER_ACCEPT, "Authorization": bearer}),
                "local_files": viewer_run(None, [], {}, files=[
                    store.frame_path(*u, 1, label) for u in every]),
            }

    def rate(name: str, conns: str) -> float | None:
        point = results.get(name, {}).get(conns)
        return point["frames_per_s"] if point else None

    ratios: dict[str, Any] = {}
    for conns in map(str, connections):
        b = rate("b_store_cached", conns)
        ratios[conns] = {
            f"b_over_{other}": round(b / r, 3) if b and (r := rate(other, conns)) else None
            for other in ("a_nginx_files", "c_store_uncached", "d_orthanc_dicomweb", "e_before")
        }
    goals = ratios.get("8", {})
    return {
        "benchmark": "frames",
        "data": {"series": len(series), "frames_per_series": len(one),
                 "frame_bytes": len(sample), "transfer_syntax": label},
        "duration_s": args.duration,
        "results": results,
        "ratios": ratios,
        "goals_at_8": {
            "b_over_a_at_least_0.5": (goals.get("b_over_a_nginx_files") or 0) >= 0.5,
            "b_over_d_at_least_10": (goals.get("b_over_d_orthanc_dicomweb") or 0) >= 10,
        },
        "viewer": viewer,
        "viewer_ratio_last_frame_platform_over_files": round(
            viewer["platform_cached"]["last_frame_ms"] / viewer["local_files"]["last_frame_ms"], 2),
        "machine": {"cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="neuronova-frames-"))
    try:
        report = run(args, home)
    finally:
        if args.keep:
            log(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
