#!/usr/bin/env python3
"""What the guard proxy costs a WADO-RS frame fetch, measured on the real platform.

The platform lets Python *decide* each DICOMweb request (token, scope, audit)
and lets nginx *move* the bytes (``X-Accel-Redirect``). This benchmark checks
that choice with numbers, all in one run on the same machine and data:

* ``orthanc_direct``   — (a) wrk → Orthanc (basic auth), at the very route the guard
  redirects frames to (the DICOMweb plugin, or the platform's own WADO plugin): the ceiling.
* ``nginx_guard``      — (b) wrk → nginx → guard (bearer token, audit row, answers
  ``X-Accel-Redirect``) → nginx internal location → Orthanc: the platform's path.
* ``python_streaming`` — (c) wrk → a FastAPI app that checks the same token and
  streams Orthanc's answer with httpx (``streaming_proxy.py``): the road not taken.
* ``guard_alone``      — diagnostic: wrk → the guard's own port; the decision and
  audit row without any image bytes, i.e. the most (b) could ever do.
* ``orthanc_dicomweb`` — diagnostic, only with ``--modes``: wrk → Orthanc's DICOMweb
  plugin, whatever route the guard uses (to compare the two Orthanc routes).

Each is driven by wrk at 1, 8 and 32 connections, cycling through the frames of
many different instances (``wrk_frames.lua``). It prints one JSON document on
stdout: frames/s, latency percentiles, errors, bytes per frame and the CPU each
process spent per frame, plus the ratios (b)/(a) and (b)/(c). Progress goes to
stderr. Target: (b) keeps >= 90 % of (a)'s throughput and is well ahead of (c).

Run: ``make bench`` or ``.venv/bin/python benchmarks/proxy_overhead.py --help``.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import platform as pyplatform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import requests
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from sqlalchemy import func, select

from neuronova_lib.config import REPO_ROOT, Settings
from neuronova_lib.db.engine import get_engine
from neuronova_lib.db.models import AuditRecord
from neuronova_lib.orthanc_store import OrthancStore
from neuronova_lib.security.roles import Role
from neuronova_lib.security.secret_store import orthanc_service_account
from neuronova_lib.security.tokens import token_service
from neuronova_lib.stack.local import LocalPlatform, free_port, local_platform
from neuronova_lib.stack.services import settings_env, uvicorn_argv

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "wrk_frames.lua"
PREFIX = "/api/pacs/dicom-web"
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"'
DEFAULT_MODES = ("orthanc_direct", "nginx_guard", "python_streaming", "guard_alone")
MODES = (*DEFAULT_MODES, "orthanc_dicomweb")
INTERNAL_LOCATION = "/internal-orthanc"
#: Read by ``streaming_proxy.create_app`` (not imported here: it pulls in FastAPI and the guard).
ORTHANC_ROOT_VARIABLE = "NEURONOVA_BENCH_ORTHANC_ROOT"
#: Target of the issue: the platform's path keeps this share of Orthanc's own throughput.
TARGET_GUARD_VS_DIRECT = 0.90
#: Orthanc (CivetWeb) and httpx keep idle connections open for a moment; a pause between
#: points lets one mode's leftover sockets close before the next mode needs Orthanc's threads.
SETTLE_S = 1.5
SYNTHETIC_SIZE = 256
#: Share of CPU taken by processes outside the benchmark above which a point is flagged.
NOISE_SHARE = 0.10


def log(message: str) -> None:
    """Progress on stderr, so stdout stays one clean JSON document."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- arguments and prerequisites -------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0,
                        help="seconds measured per point (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of unmeasured load before each point (default 2)")
    parser.add_argument("--connections", default="1,8,32",
                        help="comma-separated wrk connection counts (default 1,8,32)")
    parser.add_argument("--frames", type=int, default=155,
                        help="distinct instances (frame URLs) cycled through (default 155)")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES),
                        help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--synthetic", action="store_true",
                        help=f"use {SYNTHETIC_SIZE}x{SYNTHETIC_SIZE} generated frames, "
                             "not the demo cases")
    parser.add_argument("--wado-plugin", choices=("on", "off"),
                        help="start the platform with NeuroNova's Orthanc WADO plugin on or off "
                             "(default: the platform's own default)")
    parser.add_argument("--pin", action="store_true",
                        help="give Orthanc half the CPUs and everything else the other half, "
                             "as on a host where Orthanc has cores of its own")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary platform home (logs, audit db) and print its path")
    args = parser.parse_args(argv)
    args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - set(MODES)
    if unknown or not args.connections or min(args.connections) < 1 or args.frames < 1:
        parser.error(f"bad --modes {sorted(unknown)} / --connections / --frames")
    return args


def require_wrk() -> str:
    """wrk is a Debian package, not a Python one: say how to get it instead of a traceback."""
    path = shutil.which("wrk")
    if path is None:
        sys.exit("proxy_overhead: wrk is not installed: run `make bench` or `apt-get install wrk`")
    return path


# -- frames to serve -------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One stored instance, addressed the way WADO-RS addresses its first frame."""

    study: str
    series: str
    instance: str

    @property
    def dicomweb_path(self) -> str:
        return (f"studies/{self.study}/series/{self.series}"
                f"/instances/{self.instance}/frames/1")


def demo_files(folder: Path, count: int) -> list[Path]:
    """Slices of the platform's own demo MR (BraTS grid, 16-bit), one series after another."""
    from neuronova_lib.demo import write_demo_cases

    per_case = 4 * 155  # four channels of 155 slices on the BraTS grid
    cases = write_demo_cases(folder, cases=math.ceil(count / per_case), seed=7, overwrite=True)
    files = [f for case in cases for d in case.dicom_dirs.values() for f in sorted(d.glob("*.dcm"))]
    return files[:count]


def synthetic_files(folder: Path, count: int, size: int = SYNTHETIC_SIZE) -> list[Path]:
    """MR-like 16-bit single-frame files: the fallback when the demo writer is unavailable."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2
    study, series = generate_uid(), generate_uid()
    files = []
    for index in range(count):
        pixels = (disc * 1800 + rng.normal(300, 40, (size, size))).clip(0, 4095).astype(np.uint16)
        path = folder / f"{index + 1:04d}.dcm"
        _synthetic_dataset(pixels, study, series, index + 1).save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def _synthetic_dataset(pixels: np.ndarray, study: str, series: str, number: int) -> pydicom.Dataset:
    sop = generate_uid()
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientName, ds.Modality = "BENCH", "Benchmark^Synthetic", "MR"
    ds.InstanceNumber = number
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    return ds


def frame_files(folder: Path, count: int, synthetic: bool) -> tuple[list[Path], str]:
    """The files to store, and which source they came from (for the report)."""
    if not synthetic:
        try:
            return demo_files(folder / "demo", count), "neuronova_lib.demo (seed 7)"
        except (ImportError, OSError, RuntimeError, ValueError) as exc:  # optional here
            log(f"demo data unavailable ({exc!r}); using synthetic frames")
    size = SYNTHETIC_SIZE
    return synthetic_files(folder / "synthetic", count, size), f"synthetic {size}x{size}"


def store_frames(settings: Settings, files: list[Path]) -> list[Frame]:
    """Store the files in the platform's Orthanc; return their WADO-RS addresses."""
    store = OrthancStore.from_settings(settings)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(store.store_file, files))
    frames = []
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        frames.append(Frame(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
    return frames


def frame_description(path: Path) -> dict[str, Any]:
    ds = pydicom.dcmread(path)
    return {
        "rows": int(ds.Rows), "columns": int(ds.Columns),
        "bits_allocated": int(ds.BitsAllocated), "bits_stored": int(ds.BitsStored),
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
        "pixel_bytes": len(ds.PixelData),
    }


# -- the four ways in ------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """How one mode reaches a frame: base URL, path prefix and credentials."""

    mode: str
    base_url: str
    prefix: str
    authorization: str
    serves_bytes: bool = True

    def url(self, frame: Frame) -> str:
        return f"{self.base_url}{self.path(frame)}"

    def path(self, frame: Frame) -> str:
        return f"{self.prefix}/{frame.dicomweb_path}"


def guard_route(settings: Settings, token: str, frame: Frame) -> str:
    """The Orthanc route the guard sends frames to, read from its own X-Accel-Redirect.

    Why: (a) and (c) must fetch from the same Orthanc code as (b), or the ratios compare
    two Orthanc routes instead of two proxy paths; asking the guard keeps this true
    whatever the platform's configuration.
    """
    path = f"{PREFIX}/{frame.dicomweb_path}"
    response = requests.get(f"http://127.0.0.1:{settings.proxy_port}{path}", timeout=30,
                            headers={"Accept": FRAME_ACCEPT, "Authorization": f"Bearer {token}"})
    redirect = response.headers.get("x-accel-redirect", "")
    suffix = "/" + frame.dicomweb_path
    if response.status_code != 200 or not redirect.startswith(INTERNAL_LOCATION + "/") \
            or not redirect.endswith(suffix):
        raise RuntimeError(f"the guard answered {response.status_code} with X-Accel-Redirect "
                           f"{redirect!r}; expected {INTERNAL_LOCATION}/…{suffix}")
    return redirect[len(INTERNAL_LOCATION):-len(suffix)]


def make_targets(settings: Settings, streaming_port: int, token: str,
                 orthanc_root: str) -> dict[str, Target]:
    account = orthanc_service_account(settings.secrets_dir)
    basic = base64.b64encode(f"{account['username']}:{account['password']}".encode()).decode()
    bearer = f"Bearer {token}"
    guard_url = f"http://127.0.0.1:{settings.proxy_port}"
    return {
        "orthanc_direct": Target("orthanc_direct", settings.orthanc_url, orthanc_root,
                                 f"Basic {basic}"),
        "nginx_guard": Target("nginx_guard", settings.local_url, PREFIX, bearer),
        "python_streaming": Target("python_streaming", f"http://127.0.0.1:{streaming_port}",
                                   PREFIX, bearer),
        "guard_alone": Target("guard_alone", guard_url, PREFIX, bearer, serves_bytes=False),
        "orthanc_dicomweb": Target("orthanc_dicomweb", settings.orthanc_url, "/dicom-web",
                                   f"Basic {basic}"),
    }


def check_target(target: Target, frame: Frame, pixels: bytes) -> dict[str, Any]:
    """One request by hand before the load: wrong answers at 5,000/s would look like speed."""
    response = requests.get(target.url(frame), timeout=30, headers={
        "Accept": FRAME_ACCEPT, "Authorization": target.authorization})
    if response.status_code != 200:
        raise RuntimeError(f"{target.mode}: HTTP {response.status_code}: {response.text[:300]}")
    if not target.serves_bytes:
        if "x-accel-redirect" not in response.headers:
            raise RuntimeError(f"{target.mode}: the guard answered without X-Accel-Redirect")
        return {"body_bytes": len(response.content), "content_type": None}
    if pixels not in response.content:
        raise RuntimeError(f"{target.mode}: the answer does not hold the frame's pixel data")
    return {"body_bytes": len(response.content),
            "content_type": response.headers.get("content-type")}


@contextmanager
def streaming_proxy(settings: Settings, orthanc_root: str) -> Iterator[tuple[int, int]]:
    """Run ``streaming_proxy.py`` under the guard's own uvicorn command line; yield port, pid."""
    port = free_port()
    env = {**os.environ, **settings_env(settings), ORTHANC_ROOT_VARIABLE: orthanc_root}
    argv = uvicorn_argv("benchmarks.streaming_proxy:create_app", port)
    log_path = settings.log_dir / "streaming-proxy.log"
    with open(log_path, "ab") as handle:
        process = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env,
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/healthz", process, log_path)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streaming proxy exited ({process.returncode}); see {log_path}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"streaming proxy did not answer within 30 s; see {log_path}")


# -- CPU accounting --------------------------------------------------------------------

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from "state" on; comm may hold spaces


def _descendants(root: int) -> list[int]:
    """A process and its children (nginx's workers), from /proc's parent links."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def _cpu_s(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        if fields := _stat(pid):
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total * _TICK_S


def _machine_busy_s() -> float:
    """CPU time of the whole machine (all but idle and iowait), to spot other users' load."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) * _TICK_S


@dataclass
class CpuMeter:
    """CPU seconds of each platform process (and wrk) over one measured run.

    Why: on 2 shared cores, throughput is roughly 2 / (CPU per frame), so the
    CPU each process spends per frame says where a slower path loses its time.
    """

    groups: dict[str, list[int]]
    _start: dict[str, float] = field(default_factory=dict)
    _wrk_start: float = 0.0
    _machine_start: float = 0.0

    @classmethod
    def for_pids(cls, roots: dict[str, int]) -> CpuMeter:
        return cls({name: _descendants(pid) for name, pid in roots.items()})

    def start(self) -> None:
        self._start = {name: _cpu_s(pids) for name, pids in self.groups.items()}
        self._wrk_start = _children_cpu_s()
        self._machine_start = _machine_busy_s()

    def per_frame_ms(self, frames: int) -> dict[str, float]:
        spent = {name: _cpu_s(pids) - self._start[name] for name, pids in self.groups.items()}
        spent["wrk"] = _children_cpu_s() - self._wrk_start
        spent["total"] = sum(spent.values())
        # Anything else that ran meanwhile (the kernel's share, another job on the machine).
        machine = _machine_busy_s() - self._machine_start
        spent["everything_else"] = max(0.0, machine - spent["total"])
        return {name: round(1000 * s / max(frames, 1), 3) for name, s in spent.items()}


def _children_cpu_s() -> float:
    """wrk is this process's only child that exits during a run, so this is wrk's CPU."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pin_orthanc(orthanc_pid: int) -> dict[str, list[int]]:
    """Split the CPUs: Orthanc's threads on the upper half, this process (so wrk) and the rest
    on the lower half.

    Why: with everything on the same 2 cores, every CPU-millisecond the guard or nginx
    spend is taken from Orthanc, so (b)/(a) measures CPU sharing as much as the proxy
    path. Pinned, (b)/(a) says whether the proxy path keeps up with Orthanc when Orthanc
    is not starved, as on a host with cores to spare.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("proxy_overhead: --pin needs at least 2 CPUs")
    half = len(cpus) // 2
    others, orthanc = set(cpus[:half]), set(cpus[half:])
    for task in Path(f"/proc/{orthanc_pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), orthanc)
    return {"orthanc": sorted(orthanc), "others": sorted(others)}


def pin_others(pids: Iterable[int], cpus: set[int]) -> None:
    """Keep the platform's other processes (and their threads) off Orthanc's CPUs."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except OSError:  # a thread that just ended
                continue


# -- load generation -------------------------------------------------------------------


def write_plan(path: Path, target: Target, frames: list[Frame]) -> Path:
    """The wrk script's input: headers, then one path per frame (kept private: it holds secrets)."""
    lines = [f"H Authorization: {target.authorization}", f"H Accept: {FRAME_ACCEPT}"]
    lines += [target.path(frame) for frame in frames]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def run_wrk(
    wrk: str, target: Target, plan: Path, connections: int, seconds: float
) -> dict[str, Any]:
    """One wrk run; returns the JSON its done() printed."""
    threads = min(connections, 2)
    argv = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{max(seconds, 1):.0f}s",
            "--latency", "--timeout", "10s", "-s", str(LUA_SCRIPT), target.base_url,
            "--", str(plan), str(threads)]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^WRKJSON (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return json.loads(match.group(1))


def summarise(raw: dict[str, Any], cpu: dict[str, float], body_bytes: int) -> dict[str, Any]:
    """wrk's numbers in the units of the report."""
    requests_done = int(raw["requests"])
    seconds = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    errors = raw["errors"]
    return {
        "frames_per_s": round(requests_done / seconds, 1),
        "p50_ms": round(lat["p50"] / 1000, 3),
        "p90_ms": round(lat["p90"] / 1000, 3),
        "p99_ms": round(lat["p99"] / 1000, 3),
        "mean_ms": round(lat["mean"] / 1000, 3),
        "max_ms": round(lat["max"] / 1000, 3),
        "requests": requests_done,
        "duration_s": round(seconds, 3),
        "errors": {"non_2xx": errors["status"], "connect": errors["connect"],
                   "read": errors["read"], "write": errors["write"], "timeout": errors["timeout"]},
        "body_bytes_per_frame": body_bytes,
        "wire_bytes_per_response": round(raw["bytes"] / max(requests_done, 1)),
        "cpu_ms_per_frame": cpu,
    }


def measure_point(wrk: str, target: Target, plan: Path, connections: int,
                  args: argparse.Namespace, meter: CpuMeter, body_bytes: int,
                  count_audit_rows: Callable[[], int]) -> dict[str, Any]:
    if args.warmup > 0:
        run_wrk(wrk, target, plan, connections, args.warmup)
        time.sleep(SETTLE_S)
    rows_before = count_audit_rows()
    meter.start()
    raw = run_wrk(wrk, target, plan, connections, args.duration)
    result = summarise(raw, meter.per_frame_ms(int(raw["requests"])), body_bytes)
    time.sleep(SETTLE_S)
    # (a) and (c) write none; (b) one per request (a few more than wrk counts: requests
    # still in flight when wrk stops are answered and audited, but not counted by wrk).
    result["audit_rows_written"] = count_audit_rows() - rows_before
    return result


# -- report ----------------------------------------------------------------------------


def ratios(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """(b)/(a) and (b)/(c) throughput per connection count."""
    def rate(mode: str, conns: str) -> float | None:
        point = results.get(mode, {}).get(conns)
        return point["frames_per_s"] if point else None

    out: dict[str, dict[str, float | None]] = {}
    for conns in results.get("nginx_guard", {}):
        b = rate("nginx_guard", conns)
        a, c = rate("orthanc_direct", conns), rate("python_streaming", conns)
        out[conns] = {
            "guard_vs_direct": round(b / a, 3) if b and a else None,
            "guard_vs_streaming": round(b / c, 3) if b and c else None,
        }
    return out


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    except OSError:
        return "missing"
    return (done.stdout + done.stderr).strip().splitlines()[0]


def environment(settings: Settings, wrk: str) -> dict[str, Any]:
    store = OrthancStore.from_settings(settings)
    packages = ("fastapi", "starlette", "uvicorn", "httpx", "uvloop", "httptools")
    return {
        "cpu_count": os.cpu_count(),
        "machine": pyplatform.machine(),
        "kernel": pyplatform.release(),
        "python": pyplatform.python_version(),
        "nginx": _version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]),
        "orthanc": store.get_json("/system").get("Version"),
        "orthanc_dicomweb": store.get_json("/plugins/dicom-web").get("Version"),
        "wrk": _version([wrk, "-v"]),
        "packages": {name: _package_version(name) for name in packages},
        "uvicorn_workers": 1,
    }


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def noisy_points(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Points where other work took over 10 % as much CPU as the benchmark's own processes.

    Why: the machine may be shared; such points are slowed by someone else, so their
    ratios say little. Rerun when it is quiet.
    """
    flagged = []
    for mode, points in results.items():
        for conns, point in points.items():
            cpu = point["cpu_ms_per_frame"]
            if cpu["everything_else"] > NOISE_SHARE * cpu["total"]:
                flagged.append(f"{mode}@{conns}")
    return flagged


def verdict(table: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """The issue's target per connection count.

    Reported per count because one connection is latency-bound: its throughput is
    1 / latency, so any extra hop counts in full there, while at 8 and 32 connections
    the question is whether the proxy path keeps Orthanc busy.
    """
    met = {conns: r["guard_vs_direct"] >= TARGET_GUARD_VS_DIRECT
           for conns, r in table.items() if r["guard_vs_direct"] is not None}
    return {"guard_vs_direct_min": TARGET_GUARD_VS_DIRECT, "met": met,
            "met_everywhere": bool(met) and all(met.values())}


# -- main ------------------------------------------------------------------------------


def audit_rows(settings: Settings) -> int:
    """Rows in the audit log: proof that (b) did the guard's whole job for every frame."""
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        return int(conn.execute(select(func.count()).select_from(AuditRecord)).scalar_one())


def pin_platform(local: LocalPlatform, meter: CpuMeter) -> dict[str, list[int]]:
    pids = local.supervisor.pids()
    pinning = pin_orthanc(pids["orthanc"])
    others = [p for name, group in meter.groups.items() if name != "orthanc" for p in group]
    pin_others([os.getpid(), pids["api"], *others], set(pinning["others"]))
    log(f"pinned Orthanc to CPUs {pinning['orthanc']}, the rest to {pinning['others']}")
    return pinning


def run_points(local: LocalPlatform, targets: dict[str, Target], frames: list[Frame],
               checks: dict[str, dict[str, Any]], meter: CpuMeter, args: argparse.Namespace,
               wrk: str, work: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Every (connections, mode) point; modes interleaved so slow drift hits all alike."""
    results: dict[str, dict[str, dict[str, Any]]] = {mode: {} for mode in targets}
    for conns in args.connections:
        for mode, target in targets.items():
            plan = write_plan(work / f"plan-{mode}.txt", target, frames)
            log(f"{mode}: {conns} connection(s), {args.duration:g} s")
            point = measure_point(wrk, target, plan, conns, args, meter,
                                  checks[mode]["body_bytes"], lambda: audit_rows(local.settings))
            results[mode][str(conns)] = point
            log(f"  {point['frames_per_s']:.0f} frames/s, p50 {point['p50_ms']} ms, "
                f"p99 {point['p99_ms']} ms, errors {point['errors']}")
    return results


def run_benchmark(local: LocalPlatform, args: argparse.Namespace, wrk: str,
                  files: list[Path], source: str, work: Path) -> dict[str, Any]:
    settings = local.settings
    log(f"storing {len(files)} instances in Orthanc")
    frames = store_frames(settings, files)
    token, _ = token_service(settings).mint("clinician", Role.clinician, "access", ttl=6 * 3600)
    description = frame_description(files[0])
    pixels = pydicom.dcmread(files[0]).PixelData
    route = guard_route(settings, token, frames[0])
    log(f"the guard sends frames to Orthanc's {route}/…")
    with streaming_proxy(settings, route) as (port, streaming_pid):
        everything = make_targets(settings, port, token, route)
        targets = {m: t for m, t in everything.items() if m in args.modes}
        checks = {mode: check_target(t, frames[0], pixels) for mode, t in targets.items()}
        pids = local.supervisor.pids()
        meter = CpuMeter.for_pids({"orthanc": pids["orthanc"], "nginx": pids["nginx"],
                                   "guard": pids["proxy"], "streaming_proxy": streaming_pid})
        pinning = pin_platform(local, meter) if args.pin else None
        results = run_points(local, targets, frames, checks, meter, args, wrk, work)
    table = ratios(results)
    description.update(source=source, distinct_frames=len(frames), orthanc_route=route,
                       response_content_type=checks.get("orthanc_direct", {}).get("content_type"))
    return {
        "benchmark": "proxy_overhead",
        "unit": "frames/s = WADO-RS frame requests answered per second (one frame each)",
        "environment": environment(settings, wrk),
        "parameters": {"duration_s": args.duration, "warmup_s": args.warmup,
                       "connections": args.connections, "threads": "min(connections, 2)",
                       "accept": FRAME_ACCEPT, "cpu_pinning": pinning},
        "frame": description,
        "results": results,
        "ratios": table,
        "target": verdict(table),
        "noisy_points": noisy_points(results),
        "errors_total": sum(
            sum(p["errors"].values()) for m in results.values() for p in m.values()
        ),
    }


def platform_overrides(args: argparse.Namespace) -> dict[str, object]:
    if args.wado_plugin is None:
        return {}
    if "orthanc_wado_plugin" not in Settings.model_fields:
        sys.exit("proxy_overhead: this platform has no WADO plugin setting; drop --wado-plugin")
    return {"orthanc_wado_plugin": args.wado_plugin == "on"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = require_wrk()
    home = Path(tempfile.mkdtemp(prefix="neuronova-bench-"))
    try:
        log(f"writing {args.frames} frames in {home}")
        files, source = frame_files(home / "frames", args.frames, args.synthetic)
        log("starting the platform (Orthanc, guard, API, nginx)")
        with local_platform(home / "platform", **platform_overrides(args)) as local:
            report = run_benchmark(local, args, wrk, files, source, home)
    finally:
        if args.keep:
            log(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(report, indent=2))
    if report["errors_total"]:
        log(f"{report['errors_total']} failed requests (see errors in the results)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
