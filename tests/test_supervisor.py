"""The supervisor: clear errors at start, restarts after a crash, clean stop."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from neuronova_lib.stack.local import free_port
from neuronova_lib.stack.supervisor import Service, StartError, StopRequested, Supervisor

pytestmark = pytest.mark.e2e  # real child processes (python -m http.server, sleepers)


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


# -- restart and stop racing (real child processes; each records its pid in a file) -------

def recorded_sleeper(name: str, pids: Path, *, start_timeout: float = 20,
                     healthy: Callable[[], bool] = lambda: True) -> Service:
    """A ``python -c`` sleeper that appends its pid to ``pids`` when it starts."""
    code = (f"import os, time; open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); "
            "time.sleep(600)")
    return Service(name=name, argv=[sys.executable, "-c", code], health=healthy,
                   start_timeout=start_timeout)


def started_pids(pids: Path) -> list[int]:
    return [int(line) for line in pids.read_text().split()] if pids.exists() else []


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


class StopDuringSpawn(Supervisor):
    """Starts ``stop()`` in another thread just as a restart spawns its process.

    This widens the window between a restart deciding to spawn and registering the
    new process, where the old code lost it: stop() had already collected what ran.
    """

    stopper: threading.Thread | None = None
    respawned: Any = None

    def _spawn(self, service: Service) -> Any:
        if self._running:  # a restart, not the first start (the lock may be held: no pids())
            self.stopper = threading.Thread(target=self.stop, kwargs={"timeout": 5})
            self.stopper.start()
            wait_for(self._stopping.is_set)
            time.sleep(0.2)  # stop() now waits for the lock, or (before the fix) has looked
            self.respawned = super()._spawn(service)
            return self.respawned
        return super()._spawn(service)


def test_a_service_restarted_while_stopping_is_stopped_too(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    supervisor = StopDuringSpawn([recorded_sleeper("sleeper", pids)], tmp_path)
    supervisor.start()
    wait_for(lambda: len(started_pids(pids)) == 1)
    first = supervisor.pids()["sleeper"]
    supervisor._running["sleeper"].process.kill()
    supervisor._running["sleeper"].process.wait()
    supervisor.check()
    assert supervisor.stopper is not None
    supervisor.stopper.join(30)
    assert supervisor.respawned is not None, "the restart spawned no process"
    second = supervisor.respawned.process.pid
    assert second != first
    wait_for(lambda: not alive(second), 10)  # stopped, not left running unsupervised
    assert supervisor.pids() == {}


def test_stop_during_a_restart_does_not_wait_out_the_start_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    healthy = threading.Event()
    healthy.set()
    # After the restart the service never becomes healthy: the wait would last 300 s.
    supervisor = Supervisor([recorded_sleeper("sleeper", pids, start_timeout=300,
                                              healthy=healthy.is_set)], tmp_path)
    supervisor.start()
    wait_for(lambda: len(started_pids(pids)) == 1)
    healthy.clear()
    supervisor._running["sleeper"].process.kill()
    supervisor._running["sleeper"].process.wait()
    checker = threading.Thread(target=supervisor.check)
    checker.start()
    wait_for(lambda: len(started_pids(pids)) == 2)  # restarted, now waiting for health
    asked = time.monotonic()
    supervisor.request_stop()  # what `neuronova up`'s SIGINT handler does
    checker.join(10)
    assert not checker.is_alive(), "the restart kept waiting after a stop request"
    supervisor.stop(timeout=5)
    assert time.monotonic() - asked < 10
    assert not any(alive(pid) for pid in started_pids(pids))


def test_ctrl_c_while_starting_stops_at_once(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    never = recorded_sleeper("never", pids, start_timeout=300, healthy=lambda: False)
    supervisor = Supervisor([recorded_sleeper("first", pids), never], tmp_path)
    threading.Timer(1.0, supervisor.request_stop).start()
    started = time.monotonic()
    with pytest.raises(StopRequested):
        supervisor.start()
    assert time.monotonic() - started < 15
    assert len(started_pids(pids)) == 2
    assert not any(alive(pid) for pid in started_pids(pids))


def test_stop_ends_what_a_service_started_in_a_session_of_its_own(tmp_path: Path) -> None:
    """Like a hub's single-user servers: out of the service's process group, still stopped."""
    marker = tmp_path / "child.pid"
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
            " start_new_session=True)\n"
            f"open({str(marker)!r} + '.tmp', 'w').write(str(child.pid))\n"
            f"import os; os.replace({str(marker)!r} + '.tmp', {str(marker)!r})\n"
            "time.sleep(600)\n")
    service = Service(name="parent", argv=[sys.executable, "-c", code],
                      health=marker.exists, start_timeout=20)
    supervisor = Supervisor([service], tmp_path)
    supervisor.start()
    child = psutil.Process(int(marker.read_text()))
    assert child.is_running() and os.getsid(child.pid) != os.getsid(supervisor.pids()["parent"])
    supervisor.stop()
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
