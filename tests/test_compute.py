"""Where the platform's Dask runs, what a run checks first, and the checker's protocol (no
process is started here: the e2e side is tests/test_dask_cli_e2e.py)."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pydantic
import pytest

from bad_inputs import bad_inputs, dicom_bytes, mr
from neuronova_lib.bulk.runner import _shared_paths
from neuronova_lib.bulk.sources import parse_source
from neuronova_lib.compute import (
    ComputeUnavailable,
    own_scheduler,
    platform_client,
    scheduler_address,
    scheduler_for_run,
)
from neuronova_lib.config import Settings
from neuronova_lib.ingest import Limits
from neuronova_lib.ingest.checker import check
from neuronova_lib.ingest.framing import read_frame, write_frame
from neuronova_lib.stack.render import render_nginx
from neuronova_lib.stack.services import platform_services


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_platforms_cluster_is_its_own_an_existing_one_or_none(tmp_path: Path) -> None:
    own = Settings(home=tmp_path, dask_port=9911)
    assert own_scheduler(own) == scheduler_address(own) == "tcp://127.0.0.1:9911"
    external = Settings(home=tmp_path, dask_scheduler="tcp://sched.example:8786")
    assert own_scheduler(external) is None
    assert scheduler_address(external) == "tcp://sched.example:8786"
    off = Settings(home=tmp_path, dask_enabled=False)
    assert scheduler_address(off) is None
    with pytest.raises(ComputeUnavailable, match="NEURONOVA_DASK_SCHEDULER"):
        platform_client(off)
    silent = Settings(home=tmp_path, dask_port=_unused_port())
    with pytest.raises(ComputeUnavailable, match="neuronova up"):
        platform_client(silent)


def test_a_run_uses_the_requested_then_the_configured_then_a_running_cluster(
    tmp_path: Path,
) -> None:
    silent = Settings(home=tmp_path, dask_port=_unused_port())
    assert scheduler_for_run(silent, "tcp://asked:1") == "tcp://asked:1"
    assert scheduler_for_run(silent) is None  # configured but not running: a LocalCluster
    external = Settings(home=tmp_path, dask_scheduler="tcp://sched.example:8786")
    assert scheduler_for_run(external) == "tcp://sched.example:8786"
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        running = Settings(home=tmp_path, dask_port=listening.getsockname()[1])
        assert scheduler_for_run(running) == f"tcp://127.0.0.1:{running.dask_port}"


def test_up_starts_dask_only_without_an_existing_cluster(tmp_path: Path) -> None:
    def names(settings: Settings) -> list[str]:
        return [service.name for service in platform_services(settings)]

    own = Settings(home=tmp_path)
    assert names(own)[:6] == ["orthanc", "dask-scheduler", "dask-worker", "openemr-demo",
                              "proxy", "api"]
    [scheduler] = [s for s in platform_services(own) if s.name == "dask-scheduler"]
    assert "--dashboard-prefix" in scheduler.argv and "127.0.0.1" in scheduler.argv
    [worker] = [s for s in platform_services(own) if s.name == "dask-worker"]
    assert worker.argv[worker.argv.index("--nworkers") + 1] == str(own.dask_workers)
    for other in (Settings(home=tmp_path, dask_scheduler="tcp://sched.example:8786"),
                  Settings(home=tmp_path, dask_enabled=False)):
        assert not {"dask-scheduler", "dask-worker"} & set(names(other))


def test_nginx_serves_the_dashboard_behind_the_sign_in_only_for_its_own_scheduler(
    tmp_path: Path,
) -> None:
    own = Settings(home=tmp_path / "a", dask_dashboard_port=9912)
    text = render_nginx(own).read_text()
    block = text[text.index("location /dask/"):]
    block = block[:block.index("\n        }\n")]
    assert "auth_request /_auth/admin,scientist;" in block
    assert "proxy_pass http://127.0.0.1:9912;" in block
    assert 'proxy_set_header Authorization "";' in block
    external = Settings(home=tmp_path / "b", dask_scheduler="tcp://sched.example:8786")
    assert "location /dask/" not in render_nginx(external).read_text()


def test_memory_limit_is_checked(tmp_path: Path) -> None:
    assert Settings(home=tmp_path, dask_memory_limit="4GiB").dask_memory_limit == "4GiB"
    with pytest.raises(pydantic.ValidationError):
        Settings(home=tmp_path, dask_memory_limit="lots")


def test_workers_must_see_each_folder_and_a_file_in_it(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "b.dcm").write_bytes(b"x")
    (folder / "sub" / "a.dcm").write_bytes(b"x")
    loose = tmp_path / "loose.dcm"
    loose.write_bytes(b"x")
    paths = _shared_paths([parse_source(str(folder)), parse_source(str(loose))])
    assert paths == sorted([str(folder), str(folder / "sub" / "a.dcm"), str(tmp_path),
                            str(loose)])


def test_the_checker_answers_in_json_over_frames() -> None:
    good = dicom_bytes(mr())
    answer = check(good, Limits(), ())
    assert answer[0] == "accepted" and answer[2] == str(mr().SOPInstanceUID)
    data, reason = bad_inputs()["nested_48"]
    refused = check(data, Limits(), ())
    assert refused[:2] == ["refused", reason]
    stream = io.BytesIO()
    write_frame(stream, json.dumps(["sha", answer]).encode())
    write_frame(stream, b"")
    stream.seek(0)
    assert json.loads(read_frame(stream) or b"") == ["sha", answer]
    assert read_frame(stream) == b""  # the stop frame
    assert read_frame(stream) is None  # the end of the stream
