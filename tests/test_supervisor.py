"""The supervisor: clear errors at start, restarts after a crash, clean stop."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
import requests

from neuronova_lib.stack.local import free_port
from neuronova_lib.stack.supervisor import Service, StartError, Supervisor


def http_server(name: str, port: int) -> Service:
    return Service(
        name=name,
        argv=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        health=lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=1).ok,
        ports=[("127.0.0.1", port, "NEURONOVA_TEST_PORT")],
        start_timeout=20,
    )


def test_start_restart_and_stop(tmp_path: Path) -> None:
    port = free_port()
    supervisor = Supervisor([http_server("web", port)], tmp_path)
    supervisor.start()
    try:
        first = supervisor.pids()["web"]
        supervisor._running["web"].process.kill()
        supervisor._running["web"].process.wait()
        assert supervisor.check() == ["web"]
        assert supervisor.pids()["web"] != first
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=2).ok
    finally:
        supervisor.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
    assert "starting web" in (tmp_path / "web.log").read_text()


def test_port_in_use_names_the_variable(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        supervisor = Supervisor([http_server("web", port)], tmp_path)
        with pytest.raises(StartError, match=f"port {port} .* already in use.*NEURONOVA_TEST_PORT"):
            supervisor.start()


def test_a_service_that_dies_at_start_shows_its_log(tmp_path: Path) -> None:
    dying = Service(name="broken", argv=[sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"],
                    health=lambda: False, start_timeout=20)
    started = time.monotonic()
    with pytest.raises(StartError, match=r"(?s)broken exited with code 3.*bad config"):
        Supervisor([dying], tmp_path).start()
    assert time.monotonic() - started < 15, "a dead service must not make us wait for the timeout"


def test_a_missing_program_says_how_to_install(tmp_path: Path) -> None:
    missing = Service(name="ghost", argv=["/nonexistent/ghostd"], health=lambda: False)
    with pytest.raises(StartError, match="not installed.*make up"):
        Supervisor([missing], tmp_path).start()


def test_a_failure_stops_what_was_already_started(tmp_path: Path) -> None:
    port = free_port()
    never = Service(name="never", argv=[sys.executable, "-c", "import time; time.sleep(60)"],
                    health=lambda: False, start_timeout=2)
    supervisor = Supervisor([http_server("web", port), never], tmp_path)
    with pytest.raises(StartError, match="did not become healthy"):
        supervisor.start()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
