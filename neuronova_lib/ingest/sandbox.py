"""Run :mod:`.checks` on untrusted bytes in resource-limited checker processes.

A file built to crash or hang a parser must not take the caller down, so the
checks run in a small pool of long-lived checker processes, each a program of
its own (``python -m neuronova_lib.ingest.checker``, started with
:mod:`subprocess`; the protocol is in :mod:`.checker`), with

* ``RLIMIT_AS`` (address space) and ``RLIMIT_CORE`` 0, set once at start;
* ``RLIMIT_CPU`` re-armed before each file at *CPU used so far + the per-file
  budget*, so a busy loop is killed by the kernel (``SIGXCPU``);
* a wall-clock timeout enforced by the caller, which kills the checker.

A separate program, not a ``multiprocessing`` child, so that any process may
run the gate: a daemonic one too, such as a Dask worker as ``dask worker``,
dask-gateway or dask-kubernetes start it. A checker stays warm across files;
one that died or was killed is replaced, and the file becomes a refusal:
``checker_crashed``, ``checker_timeout`` or ``checker_out_of_memory``.

:class:`Gate` is the public face::

    with Gate(settings) as gate:
        verdict = gate.check(data)
        verdicts = gate.check_many([a, b, c])   # in parallel, one per checker

Extra checks are pickled by name, so they must be importable module-level
functions (the checker is given the caller's ``sys.path``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neuronova_lib.config import default

from .framing import HEADER
from .checks import Limits, Refusal, check_preamble

logger = logging.getLogger(__name__)

#: An extra check run in the checker after the built-in ones: ``fn(dataset, data)``; it
#: refuses by raising :class:`~.checks.Refusal`. Must be importable (pickled by name).
ExtraCheck = Callable[[Any, bytes], None]

_STARTUP_TIMEOUT = 120.0


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one file."""

    accepted: bool
    reason: str | None
    message: str
    sha256: str
    size: int
    sop_instance_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_class_uid: str | None = None
    transfer_syntax: str | None = None
    seconds: float = 0.0
    patient_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateConfig:
    """What a gate is built from: the checks' limits, its workers and their budgets.

    A process without the platform's settings (a Dask worker) is sent one of
    these; every default is the setting's (:func:`neuronova_lib.config.default`).
    """

    limits: Limits = field(default_factory=Limits)
    workers: int = default("ingest_workers")
    timeout: float = default("ingest_timeout")
    cpu_seconds: int = default("ingest_cpu_seconds")
    memory_bytes: int = default("ingest_memory_bytes")

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> "GateConfig":
        """The ``NEURONOVA_INGEST_*`` settings, with ``overrides`` (e.g. ``workers=1``)."""
        values: dict[str, Any] = {
            "limits": Limits.from_settings(settings), "workers": int(settings.ingest_workers),
            "timeout": float(settings.ingest_timeout),
            "cpu_seconds": int(settings.ingest_cpu_seconds),
            "memory_bytes": int(settings.ingest_memory_bytes),
        }
        return cls(**{**values, **overrides})


# --------------------------------------------------------------------------- caller side


def _child_env() -> dict[str, str]:
    """The caller's environment, with this checkout first on ``PYTHONPATH`` (``-m`` finds it)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


class _Worker:
    """One checker program and its pipes; used by one thread at a time."""

    def __init__(self, args: tuple) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "neuronova_lib.ingest.checker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True,
            env=_child_env(),
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        try:
            self._send(json.dumps([p for p in sys.path if isinstance(p, str)]).encode())
            self._send(pickle.dumps(args))
            ready = self._recv(time.monotonic() + _STARTUP_TIMEOUT)
        except (OSError, EOFError):
            ready = b""
        if ready != b'["ready"]':
            self.kill()
            why = "did not start in time" if ready is None else \
                f"died at start (exit {self.proc.returncode})"
            raise RuntimeError(f"ingest checker {why}")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _send(self, payload: bytes | memoryview) -> None:
        os.write(self._in, HEADER.pack(len(payload)))
        view = memoryview(payload)
        while view:
            view = view[os.write(self._in, view):]

    def _recv(self, deadline: float) -> bytes | None:
        """One frame; ``None`` when the deadline passed first; ``EOFError`` if it died."""
        buffer = bytearray()
        need, sized = HEADER.size, False
        while True:
            while len(buffer) < need:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._out], [], [], left)[0]:
                    return None
                chunk = os.read(self._out, max(65536, need - len(buffer)))
                if not chunk:
                    raise EOFError
                buffer += chunk
            if sized:
                return bytes(buffer[HEADER.size:need])
            need, sized = HEADER.size + HEADER.unpack_from(buffer)[0], True

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def stop(self) -> None:
        try:
            self._send(b"")
        except OSError:
            pass
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def run(self, data: bytes, timeout: float) -> tuple[str | None, tuple]:
        """``(sha256, answer)`` from the checker; ``(None, refusal)`` when it died or timed out."""
        deadline = time.monotonic() + timeout
        try:
            self._send(data)
            reply = self._recv(deadline)
        except OSError:  # a broken pipe: it died; the exit code says how
            reply = b""
        except EOFError:
            reply = b""
        if reply is None:
            self.kill()
            return None, ("refused", "checker_timeout",
                          f"checking took longer than {timeout:g} s; the checker was killed")
        if reply:
            try:
                sha, answer = json.loads(reply)
                return str(sha), tuple(answer)
            except (ValueError, TypeError):
                self.kill()
                return None, ("refused", "checker_crashed", "the checker answered nonsense")
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        self.kill()
        if code == -signal.SIGXCPU:
            return None, ("refused", "checker_timeout", "the checker ran past its CPU time limit")
        if code == -signal.SIGKILL:
            return None, ("refused", "checker_out_of_memory",
                          "the checker was killed (out of memory)")
        name = signal.Signals(-code).name if code is not None and code < 0 else code
        return None, ("refused", "checker_crashed", f"the checker process died ({name})")


class Gate:
    """Checks untrusted DICOM bytes in a pool of sandboxed worker processes.

    Parameters
    ----------
    settings : Settings, optional
        Limits, worker count and timeouts (``NEURONOVA_INGEST_*``); default
        :func:`~neuronova_lib.config.get_settings`.
    extra_checks : sequence of callables, optional
        ``fn(dataset, data)`` run in the worker after the built-in checks;
        importable functions (they are pickled by name).

    A process without the settings (a Dask worker) builds one with
    :meth:`from_config` from a :class:`GateConfig` it was sent.
    """

    def __init__(self, settings: Any = None, *, extra_checks: Iterable[ExtraCheck] = ()) -> None:
        if settings is None:
            from neuronova_lib.config import get_settings

            settings = get_settings()
        config = GateConfig.from_settings(settings)
        self._setup(config.limits, workers=config.workers, timeout=config.timeout,
                    cpu_seconds=config.cpu_seconds, memory_bytes=config.memory_bytes,
                    extra_checks=extra_checks)

    @classmethod
    def from_config(cls, config: GateConfig, *,
                    extra_checks: Iterable[ExtraCheck] = ()) -> "Gate":
        """A gate from a :class:`GateConfig` (its limits, workers and per-file budgets)."""
        gate = cls.__new__(cls)
        gate._setup(config.limits, workers=config.workers, timeout=config.timeout,
                    cpu_seconds=config.cpu_seconds, memory_bytes=config.memory_bytes,
                    extra_checks=extra_checks)
        return gate

    def _setup(self, limits: Limits, *, workers: int, timeout: float, cpu_seconds: int,
               memory_bytes: int, extra_checks: Iterable[ExtraCheck]) -> None:
        self.limits = limits
        self.timeout = float(timeout)
        self.size = int(workers)
        self._args = (limits, int(memory_bytes), int(cpu_seconds), tuple(extra_checks))
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self._started = 0
        self._finalizer = weakref.finalize(self, Gate._shutdown, self._all)

    # Workers are started lazily, one at a time, up to ``size``.
    def _acquire(self) -> _Worker:
        while True:
            if self._closed:
                raise RuntimeError("the gate is closed")
            with self._lock:
                try:
                    return self._idle.get_nowait()
                except queue.Empty:
                    pass
                grow = self._started < self.size
                if grow:
                    self._started += 1
            if grow:
                try:
                    worker = _Worker(self._args)
                except BaseException:
                    with self._lock:
                        self._started -= 1
                    raise
                with self._lock:
                    self._all.append(worker)
                return worker
            # All workers busy: wait for one, re-checking in case a busy one died.
            try:
                return self._idle.get(timeout=0.05)
            except queue.Empty:
                continue

    def _release(self, worker: _Worker) -> None:
        if worker.alive:
            self._idle.put(worker)
            return
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
            self._started -= 1
        logger.warning("ingest checker died; a new one starts on demand")

    def check(self, data: bytes | bytearray | memoryview) -> Verdict:
        """Check one file; never raises for anything the bytes contain."""
        started = time.monotonic()
        data = bytes(data)
        try:
            check_preamble(data, self.limits)
        except Refusal as refusal:
            return Verdict(False, refusal.reason, refusal.message,
                           hashlib.sha256(data).hexdigest(), len(data),
                           seconds=time.monotonic() - started)
        worker = self._acquire()
        try:
            remote_sha, answer = worker.run(data, self.timeout)
        finally:
            self._release(worker)
        sha = remote_sha or hashlib.sha256(data).hexdigest()
        elapsed = time.monotonic() - started
        if answer[0] == "accepted":
            _, sop_class, sop, study, series, syntax, patient = answer
            return Verdict(True, None, "accepted", sha, len(data), sop, study, series,
                           sop_class, syntax, elapsed, patient)
        _, reason, message, *identity = answer
        sop_class, sop, study = (identity + [None, None, None])[:3]
        return Verdict(False, reason, message, sha, len(data), sop, study, None, sop_class,
                       seconds=elapsed)

    def check_many(self, items: Sequence[bytes]) -> list[Verdict]:
        """Check files in parallel (one per worker); verdicts in input order."""
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self.size, len(items))) as pool:
            return list(pool.map(self.check, items))

    @property
    def workers(self) -> list[int]:
        """PIDs of the live workers (for tests and monitoring)."""
        with self._lock:
            return [w.proc.pid for w in self._all if w.alive]

    @staticmethod
    def _shutdown(workers: list[_Worker]) -> None:
        for worker in list(workers):
            worker.stop()
        workers.clear()

    def close(self) -> None:
        self._closed = True
        self._finalizer()

    def __enter__(self) -> "Gate":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
