"""Bulk work on a Dask cluster as a user already runs it: Dask's own command line, defaults.

A scheduler (``dask scheduler --no-dashboard``) and workers (``dask worker
ADDRESS --nworkers 2 --nthreads 1``: daemonic worker processes, Dask's
default) run as separate processes; a private platform is pointed at that
scheduler (``NEURONOVA_DASK_SCHEDULER``). On it: a transcode of demo data with
every bad-input class (the 48-deep nested file among them) — each refused with
its reason, the good files stored as HTJ2K with their exact pixels, every
worker process still the same one afterwards; an upload job through the API;
a ``dask worker`` killed outright mid-run (nothing lost, the run goes on, a
second run changes nothing). Then the checks before a run: a worker with
another version of the package, and a folder the workers do not see, are
refused with what to do. Last, the platform's own Dask service (what ``make
up`` starts) is healthy and runs a transcode.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from orthanc_checks import assert_stored_as_htj2k

from bad_inputs import bad_inputs
from neuronova_lib.bulk import BulkSetupError, OrthancAccess, transcode_sources
from neuronova_lib.config import REPO_ROOT
from neuronova_lib.demo import write_demo_cases
from neuronova_lib.demo.phantom import SIZES
from neuronova_lib.stack.local import free_port, local_platform

pytestmark = pytest.mark.e2e

SHAPE, SPACING = SIZES["small"]
JOB_TIMEOUT = 120.0


def _dask(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
          prefix: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """``dask ARGS`` (the venv's), in a session of its own (so a test can kill all of it)."""
    return subprocess.Popen([*prefix, sys.executable, "-m", "dask", *args],
                            env={**os.environ, **(env or {})}, cwd=cwd or REPO_ROOT,
                            start_new_session=True, stdin=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _client(address: str, workers: int) -> Any:
    from distributed import Client

    client = Client(address, timeout=60, set_as_default=False)
    client.wait_for_workers(workers, timeout=120)
    return client


class CliCluster:
    def __init__(self, address: str, scheduler: subprocess.Popen[bytes],
                 workers: list[subprocess.Popen[bytes]]) -> None:
        self.address, self.scheduler, self.workers = address, scheduler, workers

    def worker_pids(self, client: Any) -> set[int]:
        return set(client.run(os.getpid).values())


@pytest.fixture(scope="module")
def cli_cluster() -> Iterator[CliCluster]:
    """``dask scheduler --no-dashboard`` + ``dask worker --nworkers 2 --nthreads 1``."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = _dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
    worker = _dask("worker", address, "--nworkers", "2", "--nthreads", "1")
    cluster = CliCluster(address, scheduler, [worker])
    try:
        with _client(address, 2):
            pass
        yield cluster
    finally:
        for proc in [*cluster.workers, scheduler]:
            _stop(proc)


@pytest.fixture(scope="module")
def cli_platform(cli_cluster: CliCluster, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A private platform whose Dask work goes to the command-line cluster."""
    home = tmp_path_factory.mktemp("dask-cli-home")
    with local_platform(home, dask_scheduler=cli_cluster.address) as local:
        yield local


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("dask-cli-demo")
    infos = write_demo_cases(root, cases=3, seed=7416, shape=SHAPE, spacing=SPACING)
    return [info.directory / "dicom" for info in infos]


def _dcm(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm"))


def _first_series(case: Path) -> Path:
    return sorted(p for p in case.iterdir() if p.is_dir())[0]


def test_transcode_with_bad_files_on_daemonic_cli_workers(
    cli_cluster: CliCluster, cli_platform: Any, cases: list[Path], tmp_path: Path,
) -> None:
    series = _first_series(cases[0])
    good = _dcm(series)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    expected: dict[str, str] = {}
    for name, (data, reason) in bad_inputs().items():
        (bad_dir / f"{name}.dcm").write_bytes(data)
        expected[name] = reason
    sources = [str(series), str(bad_dir)]
    with _client(cli_cluster.address, 2) as client:
        pids = cli_cluster.worker_pids(client)
        daemonic = set(client.run(lambda: __import__("multiprocessing").current_process().daemon)
                       .values())
        assert daemonic == {True}, "Dask's default workers are daemonic"
        summary = transcode_sources(sources, settings=cli_platform.settings,
                                    scheduler=cli_cluster.address, batch_size=4,
                                    manifest_path=tmp_path / "manifest.db")
        # Every worker process is the one that started: no file killed one.
        assert cli_cluster.worker_pids(client) == pids
    assert summary.scheduler == cli_cluster.address
    assert summary.dashboard is None, "the scheduler runs no dashboard: no link"
    assert summary.counts["done"] == len(good) and summary.counts["pending"] == 0
    assert summary.counts["failed"] == len(expected), summary.failure_reasons
    failures = {Path(r["locator"]).stem: r for r in _report_rows(summary.report, "failures")}
    for name, reason in expected.items():
        assert failures[name]["reason"] == reason, (name, failures[name])
    assert failures["nested_48"]["reason"] == "nesting_too_deep"
    orthanc = OrthancAccess.from_settings(cli_platform.settings)
    for path in good:
        assert_stored_as_htj2k(orthanc, path)


def _report_rows(report: str, key: str) -> list[dict[str, Any]]:
    import json

    return list(json.loads(Path(report).read_text())[key])


def test_upload_job_through_the_api_runs_on_the_cli_cluster(
    cli_cluster: CliCluster, cli_platform: Any, cases: list[Path],
) -> None:
    from neuronova_lib.db.users import demo_password

    token = requests.post(f"{cli_platform.url}/api/auth/token", timeout=30, data={
        "username": "admin", "password": demo_password(cli_platform.settings, "admin"),
    }).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    series = [_dcm(cases[1])[:40], _dcm(cases[1])[40:80]]
    jobs = []
    for files in series:  # two jobs, in flight together
        answer = requests.post(f"{cli_platform.url}/api/studies", headers=headers, timeout=60,
                               files=[("files", (p.name, p.read_bytes(), "application/dicom"))
                                      for p in files])
        assert answer.status_code == 202, answer.text
        jobs.append(answer.json()["status_url"])
    deadline = time.monotonic() + JOB_TIMEOUT
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(jobs):
        assert time.monotonic() < deadline, f"jobs not finished after {JOB_TIMEOUT} s"
        for url in jobs:
            job = requests.get(f"{cli_platform.url}{url}", headers=headers, timeout=10).json()
            if job["state"] in ("done", "failed"):
                done[url] = job
        time.sleep(0.5)
    orthanc = OrthancAccess.from_settings(cli_platform.settings)
    for url, files in zip(jobs, series):
        job = done[url]
        assert job["state"] == "done" and job["counts"]["done"] == len(files), job
        for path in files:
            assert_stored_as_htj2k(orthanc, path)


def test_a_killed_dask_worker_loses_nothing_and_the_run_goes_on(
    cli_cluster: CliCluster, cli_platform: Any, cases: list[Path], tmp_path: Path,
) -> None:
    # A second `dask worker` (one process), killed outright with everything it started.
    extra = _dask("worker", cli_cluster.address, "--nworkers", "1", "--nthreads", "1")
    cli_cluster.workers.append(extra)
    with _client(cli_cluster.address, 3) as client:
        before = cli_cluster.worker_pids(client)
    seen = {"batches": 0}

    def sabotage(results: list[dict[str, Any]]) -> None:
        seen["batches"] += 1
        if seen["batches"] == 2:
            os.killpg(extra.pid, signal.SIGKILL)

    folder = cases[2]
    good = _dcm(folder)
    summary = transcode_sources([str(folder)], settings=cli_platform.settings,
                                scheduler=cli_cluster.address, batch_size=4,
                                manifest_path=tmp_path / "manifest.db", on_batch=sabotage)
    assert seen["batches"] > 2, "the run ended before the kill"
    assert extra.wait(10) == -signal.SIGKILL
    assert summary.counts == {"pending": 0, "done": len(good), "skipped": 0, "failed": 0}
    assert summary.status == "complete"
    again = transcode_sources([str(folder)], settings=cli_platform.settings,
                              scheduler=cli_cluster.address,
                              manifest_path=tmp_path / "manifest.db")
    assert again.this_run["processed"] == 0 and again.status == "complete"
    with _client(cli_cluster.address, 2) as client:
        after = cli_cluster.worker_pids(client)
    assert len(after) == 2 and after < before  # the first `dask worker`'s two, unchanged
    orthanc = OrthancAccess.from_settings(cli_platform.settings)
    for path in good[::7]:
        assert_stored_as_htj2k(orthanc, path)


def test_a_worker_with_another_version_or_without_the_files_is_named(
    cli_platform: Any, cases: list[Path], tmp_path: Path,
) -> None:
    """A cluster of its own: a worker that imports another neuronova_lib, then one in a
    mount namespace where the demo folder is an empty tmpfs (the client's files only)."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = _dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
    other = tmp_path / "other-install"
    (other / "neuronova_lib").mkdir(parents=True)
    (other / "neuronova_lib" / "__init__.py").write_text('__version__ = "0.0.1"\n')
    worker = _dask("worker", address, "--nworkers", "1", cwd=other,
                   env={"PYTHONPATH": str(other)})
    try:
        with _client(address, 1):
            pass
        with pytest.raises(BulkSetupError) as info:
            transcode_sources([str(cases[0])], settings=cli_platform.settings,
                              scheduler=address, manifest_path=tmp_path / "m1.db")
        message = str(info.value)
        assert "neuronova_lib 0.0.1" in message and "the client has 0.1.0" in message, message
        assert "127.0.0.1" in message and "Install neuronova" in message
        _stop(worker)
        hidden = cases[0]
        worker = _dask("worker", address, "--nworkers", "1",
                       prefix=("unshare", "--mount", "--propagation", "private", "sh", "-c",
                               f'mount -t tmpfs none "{hidden}" && exec "$@"', "sh"))
        with _client(address, 1):
            pass
        with pytest.raises(BulkSetupError) as info:
            transcode_sources([str(hidden)], settings=cli_platform.settings,
                              scheduler=address, manifest_path=tmp_path / "m2.db")
        message = str(info.value)
        assert f"does not see {hidden}" in message and "shared file system" in message, message
    finally:
        _stop(worker)
        _stop(scheduler)


def test_the_platforms_own_dask_service_is_healthy_and_runs_a_transcode(
    tmp_path: Path, cases: list[Path],
) -> None:
    """What ``make up`` starts: `dask scheduler` and `dask worker` under the supervisor."""
    from neuronova_lib.compute import dashboard_link, platform_client

    with local_platform(tmp_path / "home", dask_enabled=True) as local:
        pids = local.supervisor.pids()
        assert {"dask-scheduler", "dask-worker"} <= set(pids)
        settings = local.settings
        board = requests.get(
            f"http://127.0.0.1:{settings.dask_dashboard_port}/dask/json/counts.json", timeout=10)
        assert board.status_code == 200 and board.json()["workers"] == settings.dask_workers
        with platform_client(settings) as client:
            assert dashboard_link(client, settings) == f"{settings.public_url}/dask/status"
        # Not open to anyone: nginx asks the sign-in first.
        assert requests.get(f"{local.url}/dask/status", timeout=10).status_code != 200
        from neuronova_lib.compute import scheduler_for_run

        folder = _first_series(cases[0])
        summary = transcode_sources([str(folder)], settings=settings,
                                    scheduler=scheduler_for_run(settings),
                                    manifest_path=tmp_path / "manifest.db")
        assert summary.scheduler == f"tcp://127.0.0.1:{settings.dask_port}"
        assert summary.status == "complete", summary.failure_reasons
        assert summary.counts["done"] == len(_dcm(folder)) == 40
