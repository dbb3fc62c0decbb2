"""A small process supervisor: start in order, wait for health, restart, stop cleanly.

Why not supervisord or honcho: the platform needs ordered start-up gated on a
real health probe, a clear message naming the service and its log when one
fails, and a restart that waits for the old process to end (Orthanc refuses
to reopen its SQLite index while the previous process still holds it).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .process_tree import descendants, stop_stragglers

log = logging.getLogger(__name__)


class StartError(RuntimeError):
    """A service could not start; the message says which, why, and what to do."""


class StopRequested(Exception):
    """A stop was asked for (Ctrl-C, ``neuronova down``) while a service was starting."""


@dataclass
class Service:
    """One supervised process."""

    name: str
    argv: list[str]
    health: Callable[[], bool]
    ports: list[tuple[str, int, str]] = field(default_factory=list)  # (address, port, variable)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    start_timeout: float = 60.0
    prepare: Callable[[], object] | None = None


@dataclass
class _Running:
    service: Service
    process: subprocess.Popen[bytes]
    log_handle: IO[bytes]
    restarts: list[float] = field(default_factory=list)


def port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join("    " + line for line in text[-lines:]) or "    (log is empty)"


class Supervisor:
    """Runs a list of services; ``start()`` returns once all are healthy."""

    #: A service that dies this many times within ``restart_window`` is given up on.
    max_restarts = 5
    restart_window = 120.0

    def __init__(self, services: list[Service], log_dir: Path) -> None:
        self.services = services
        self.log_dir = log_dir
        self._running: dict[str, _Running] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.failed: str | None = None
        #: Called after a service was restarted (``up`` records the new pid in the data dir).
        self.on_change: Callable[[], None] | None = None

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    # -- start -----------------------------------------------------------
    def _check_ports(self, service: Service) -> None:
        for address, port, variable in service.ports:
            if not port_free(address, port):
                raise StartError(
                    f"{service.name}: port {port} on {address} is already in use. "
                    f"Stop what uses it (`ss -ltnp 'sport = :{port}'`) or set {variable} "
                    f"to a free port."
                )

    def _spawn(self, service: Service) -> _Running:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.log_path(service.name), "ab")
        handle.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {service.name}\n".encode())
        handle.flush()
        env = {**os.environ, **service.env}
        try:
            process = subprocess.Popen(
                service.argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=service.cwd, env=env, start_new_session=True,
            )
        except FileNotFoundError:
            handle.close()
            raise StartError(
                f"{service.name}: {service.argv[0]} is not installed. Run `make up` "
                f"(it installs the Debian packages) or install it by hand."
            ) from None
        return _Running(service, process, handle)

    def _wait_healthy(self, running: _Running) -> None:
        """Until the health probe passes; a stop request ends the wait at once (no timeout)."""
        service = running.service
        deadline = time.monotonic() + service.start_timeout
        while time.monotonic() < deadline:
            if self._stopping.is_set():
                raise StopRequested(f"stop requested while {service.name} was starting")
            code = running.process.poll()
            if code is not None:
                raise StartError(
                    f"{service.name} exited with code {code} while starting. "
                    f"Last lines of {self.log_path(service.name)}:\n"
                    f"{log_tail(self.log_path(service.name))}"
                )
            try:
                if service.health():
                    return
            except Exception:  # not up yet
                pass
            self._stopping.wait(0.2)
        raise StartError(
            f"{service.name} did not become healthy within {service.start_timeout:.0f} s. "
            f"Last lines of {self.log_path(service.name)}:\n{log_tail(self.log_path(service.name))}"
        )

    def _spawn_registered(self, service: Service) -> _Running:
        """Spawn and register as one step under the lock, unless a stop has begun.

        ``stop()`` sets the stop event before it takes the lock to collect what runs,
        so a process is either registered before that (and stopped with the rest) or
        never spawned: none can slip in after ``stop()`` has looked.
        """
        with self._lock:
            if self._stopping.is_set():
                raise StopRequested(f"stop requested before {service.name} was started")
            running = self._spawn(service)
            self._running[service.name] = running
            return running

    def start_one(self, service: Service) -> None:
        if service.prepare:
            service.prepare()
        self._check_ports(service)
        running = self._spawn_registered(service)
        self._wait_healthy(running)
        log.info("%s is up (pid %d)", service.name, running.process.pid)

    def start(self) -> None:
        """Start every service in order; on any failure stop those already started."""
        try:
            for service in self.services:
                self.start_one(service)
        except BaseException:  # StartError, StopRequested, KeyboardInterrupt
            self.stop()
            raise

    # -- run -------------------------------------------------------------
    def pids(self) -> dict[str, int]:
        with self._lock:
            return {name: r.process.pid for name, r in self._running.items()}

    def check(self) -> list[str]:
        """Restart services that died; return the names restarted.

        Safe against a concurrent ``stop()`` (a signal handler, another thread): a
        service restarted while stopping is stopped too, and a stop request ends the
        wait for the restarted service's health at once.
        """
        restarted = []
        with self._lock:
            items = list(self._running.items())
        for name, running in items:
            if self._stopping.is_set():
                break
            if running.process.poll() is None:
                continue
            code = running.process.returncode
            now = time.monotonic()
            recent = [t for t in running.restarts if now - t < self.restart_window]
            if len(recent) >= self.max_restarts:
                self.failed = (
                    f"{name} died {len(recent)} times in {self.restart_window:.0f} s "
                    f"(last exit {code}); see {self.log_path(name)}"
                )
                log.error(self.failed)
                continue
            log.warning("%s exited with code %s; restarting", name, code)
            running.log_handle.close()
            try:
                fresh = self._spawn_registered(running.service)
            except StopRequested:
                break
            except StartError as exc:  # e.g. its program was removed meanwhile
                log.error("%s", exc)
                continue
            fresh.restarts = recent + [now]
            restarted.append(name)
            try:
                self._wait_healthy(fresh)
            except StopRequested:
                break
            except StartError as exc:
                log.error("%s", exc)
        if restarted and self.on_change is not None and not self._stopping.is_set():
            self.on_change()
        return restarted

    def request_stop(self) -> None:
        """Ask ``run_forever`` to return (safe from a signal handler)."""
        self._stopping.set()

    def run_forever(self, poll: float = 1.0) -> None:
        """Watch until ``stop()`` is called or a service cannot be kept up."""
        while not self._stopping.wait(poll):
            self.check()
            if self.failed:
                break

    # -- stop ------------------------------------------------------------
    def stop(self, timeout: float = 15.0) -> None:
        """Stop in reverse order: SIGTERM, then SIGKILL after ``timeout``.

        The stop event is set before the lock is taken: a restart in another thread
        then either registered its process already (stopped here) or spawns none.
        """
        self._stopping.set()
        with self._lock:
            items = list(self._running.items())[::-1]
            self._running.clear()
        for name, running in items:
            process = running.process
            family = descendants(process.pid)  # those in sessions of their own too
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %.0f s; killing it", name, timeout)
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            if left := stop_stragglers(family):
                log.warning("%s left %d process(es) running; stopped them too (pids %s)",
                            name, len(left), ", ".join(map(str, left)))
            running.log_handle.close()
