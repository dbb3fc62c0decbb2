"""Run :mod:`.checks` on untrusted bytes in resource-limited worker processes.

A file built to crash or hang a parser must not take the caller down, so the
checks run in a small pool of long-lived worker processes (``spawn``: no
state, locks or threads inherited from the caller), each with

* ``RLIMIT_AS`` (address space) and ``RLIMIT_CORE`` 0, set once at start;
* ``RLIMIT_CPU`` re-armed before each file at *CPU used so far + the per-file
  budget*, so a busy loop is killed by the kernel (``SIGXCPU``);
* a wall-clock timeout enforced by the caller, which kills the worker.

A worker that died or was killed is replaced, and the file becomes a refusal:
``checker_crashed``, ``checker_timeout`` or ``checker_out_of_memory``.

:class:`Gate` is the public face::

    with Gate(settings) as gate:
        verdict = gate.check(data)
        verdicts = gate.check_many([a, b, c])   # in parallel, one per worker

Workers are started with ``spawn``, which re-imports the caller's ``__main__``
module in each worker: a script that builds a :class:`Gate` at import time
needs the usual ``if __name__ == "__main__":`` guard (services under uvicorn
and pytest are fine). Extra checks are pickled by name, so they must be
importable module-level functions.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import queue
import resource
import signal
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from neuronova_lib.config import default
from neuronova_lib.uids import valid_uid

from .checks import Limits, Refusal, check_dataset, check_preamble, parse, scan_raw

logger = logging.getLogger(__name__)

#: An extra check run in the worker after the built-in ones: ``fn(dataset, data)``; it
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


# --------------------------------------------------------------------------- worker side


def _set_limits(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _arm_cpu(cpu_seconds: int) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(used) + cpu_seconds + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _identity(ds: Any) -> tuple[str | None, str | None, str | None]:
    """SOP Class, SOP Instance and Study UIDs of a refused file, where they are valid UIDs.

    A STOW-RS answer names each failed instance by its UIDs when it can.
    """
    found: list[str | None] = []
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"):
        try:
            text = str(ds.get(keyword, "") or "").strip("\x00 ") if ds is not None else ""
        except Exception:  # noqa: BLE001 - a broken element just means "unknown"
            text = ""
        found.append(text if valid_uid(text) else None)
    return found[0], found[1], found[2]


def _check_in_worker(data: bytes, limits: Limits, extra: Sequence[ExtraCheck]) -> tuple:
    ds = None
    try:
        scan = scan_raw(data, limits)
        ds = parse(data)
        accepted = check_dataset(ds, scan, limits)
        for fn in extra:
            fn(ds, data)
    except Refusal as refusal:
        return ("refused", refusal.reason, refusal.message, *_identity(ds))
    except MemoryError:
        return ("refused", "checker_out_of_memory", "the checker ran out of memory")
    except RecursionError:
        return ("refused", "nesting_too_deep", "structure too deep for the parser")
    except Exception as exc:  # noqa: BLE001 - a checker bug must still answer
        return ("refused", "checker_crashed",
                f"checker error {type(exc).__name__}: {str(exc)[:300]}")
    return ("accepted", accepted.sop_class_uid, accepted.sop_instance_uid, accepted.study_uid,
            accepted.series_uid, accepted.transfer_syntax, accepted.patient_id)


def _worker_main(conn: Any, limits: Limits, memory_bytes: int, cpu_seconds: int,
                 extra: Sequence[ExtraCheck]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides when we stop
    _set_limits(memory_bytes)
    # Malformed input is the normal case here: pydicom's warnings would only flood stderr.
    warnings.simplefilter("ignore")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    import pydicom  # noqa: F401 - warm imports before the first file

    from neuronova_lib import htj2k

    htj2k.register()  # HTJ2K pixel data decode through the platform's codec

    conn.send(("ready",))
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not data:
            return
        _arm_cpu(cpu_seconds)
        # The digest is taken here, beside the checks, so the caller's process spends no
        # CPU on it (on a small machine the caller shares its cores with Orthanc).
        sha = hashlib.sha256(data).hexdigest()
        result = _check_in_worker(data, limits, extra)
        del data
        try:
            conn.send((sha, result))
        except MemoryError:
            conn.send((sha, ("refused", "checker_out_of_memory", "the checker ran out of memory")))


# --------------------------------------------------------------------------- caller side


class _Worker:
    def __init__(self, ctx: Any, args: tuple) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, *args), daemon=True,
                                name="neuronova-ingest-worker")
        self.proc.start()
        child.close()
        if not self.conn.poll(_STARTUP_TIMEOUT):
            self.kill()
            raise RuntimeError("ingest worker did not start")
        try:
            self.conn.recv()
        except EOFError:
            self.kill()
            raise RuntimeError(f"ingest worker died at start (exit {self.proc.exitcode})") \
                from None

    @property
    def alive(self) -> bool:
        return self.proc.is_alive()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send_bytes(b"")
        except OSError:
            pass
        self.proc.join(2)
        self.kill()

    def run(self, data: bytes, timeout: float) -> tuple[str | None, tuple]:
        """``(sha256, answer)`` from the worker; ``(None, refusal)`` when it died or timed out."""
        deadline = time.monotonic() + timeout
        try:
            self.conn.send_bytes(data)
            ready = self.conn.poll(max(0.0, deadline - time.monotonic()))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            ready = True  # the recv below finds out
        if not ready:
            self.kill()
            return None, ("refused", "checker_timeout",
                          f"checking took longer than {timeout:g} s; the worker was killed")
        try:
            sha, answer = self.conn.recv()
            return sha, answer
        except (EOFError, OSError):
            pass
        self.proc.join(5)
        code = self.proc.exitcode
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
        self._ctx = multiprocessing.get_context("spawn")
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
                    worker = _Worker(self._ctx, self._args)
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
        logger.warning("ingest worker died; a new one starts on demand")

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
