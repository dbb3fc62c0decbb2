"""The gate's checker as a program of its own: ``python -m neuronova_lib.ingest.checker``.

Why a separate program and not a ``multiprocessing`` child: a daemonic
process (a Dask worker as Dask starts it by default, under ``dask worker``,
dask-gateway, dask-kubernetes or dask-jobqueue) may not have children made by
``multiprocessing``, but it may start any program. So the checker is started
with :mod:`subprocess` by :mod:`.sandbox` and talks over its stdin and stdout.

The protocol (one caller, one file at a time), every message a *frame*: an
8-byte big-endian length, then that many bytes.

* caller → checker, first frame: the caller's ``sys.path`` (JSON), so that
  what the caller imports, the checker can;
* caller → checker, second frame: the set-up, a pickle of ``(limits,
  memory_bytes, cpu_seconds, extra_checks)`` (the caller is trusted; extra
  checks are importable functions, pickled by name);
* checker → caller: ``["ready"]`` (JSON);
* then, for each file: caller → checker the file's bytes; checker → caller a
  JSON array ``[sha256, answer]`` where ``answer`` is ``["accepted", sop_class,
  sop_instance, study, series, transfer_syntax, patient_id]`` or ``["refused",
  reason, message, sop_class?, sop_instance?, study?]``;
* an empty frame (length 0), or the end of stdin, stops the checker.

Answers are JSON, never pickle: the checker parses hostile bytes, and
whatever it sends back must not be able to run code in the caller.

Limits, set by the checker on itself: ``RLIMIT_AS`` and ``RLIMIT_CORE`` 0 at
start; ``RLIMIT_CPU`` re-armed before each file at *CPU used so far + the
per-file budget* (the kernel kills a busy loop with ``SIGXCPU``). The wall
clock is the caller's: it kills the checker. The checker also ends when its
caller does (stdin closes, or its parent process changes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import resource
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

from .framing import read_frame, write_frame

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


def _identity(ds: Any) -> list[str | None]:
    """SOP Class, SOP Instance and Study UIDs of a refused file, where they are valid UIDs.

    A STOW-RS answer names each failed instance by its UIDs when it can.
    """
    from neuronova_lib.uids import valid_uid

    found: list[str | None] = []
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"):
        try:
            text = str(ds.get(keyword, "") or "").strip("\x00 ") if ds is not None else ""
        except Exception:  # noqa: BLE001 - a broken element just means "unknown"
            text = ""
        found.append(text if valid_uid(text) else None)
    return found


def check(data: bytes, limits: Any, extra: Sequence[Any]) -> list[Any]:
    """The answer for one file (see the module docstring); never raises for the bytes."""
    from .checks import Refusal, check_dataset, parse, scan_raw

    ds = None
    try:
        scan = scan_raw(data, limits)
        ds = parse(data)
        accepted = check_dataset(ds, scan, limits)
        for fn in extra:
            fn(ds, data)
    except Refusal as refusal:
        return ["refused", refusal.reason, refusal.message, *_identity(ds)]
    except MemoryError:
        return ["refused", "checker_out_of_memory", "the checker ran out of memory"]
    except RecursionError:
        return ["refused", "nesting_too_deep", "structure too deep for the parser"]
    except Exception as exc:  # noqa: BLE001 - a checker bug must still answer
        return ["refused", "checker_crashed",
                f"checker error {type(exc).__name__}: {str(exc)[:300]}"]
    return ["accepted", accepted.sop_class_uid, accepted.sop_instance_uid, accepted.study_uid,
            accepted.series_uid, accepted.transfer_syntax, accepted.patient_id]


def _watch_parent(parent: int) -> None:
    """End this checker when the process that started it is gone (even mid-file)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides when we stop
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    # Nothing else may write to the protocol stream: stray prints go to stderr.
    sys.stdout = sys.stderr
    path = read_frame(source)
    if not path:
        return 0
    for entry in reversed(json.loads(path)):  # what the caller imports from (extra checks)
        if entry not in sys.path:
            sys.path.insert(0, entry)
    setup = read_frame(source)
    if not setup:
        return 0
    limits, memory_bytes, cpu_seconds, extra = pickle.loads(setup)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True,
                     name="watch-parent").start()
    _set_limits(memory_bytes)
    # Malformed input is the normal case here: pydicom's warnings would only flood stderr.
    warnings.simplefilter("ignore")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    import pydicom  # noqa: F401 - warm imports before the first file

    from neuronova_lib import htj2k

    htj2k.register()  # HTJ2K pixel data decode through the platform's codec
    write_frame(sink, b'["ready"]')
    while True:
        data = read_frame(source)
        if not data:
            return 0
        _arm_cpu(cpu_seconds)
        # The digest is taken here, beside the checks, so the caller's process spends no
        # CPU on it (on a small machine the caller shares its cores with Orthanc).
        sha = hashlib.sha256(data).hexdigest()
        answer = check(data, limits, extra)
        del data
        try:
            reply = json.dumps([sha, answer]).encode()
        except MemoryError:
            reply = json.dumps([sha, ["refused", "checker_out_of_memory",
                                      "the checker ran out of memory"]]).encode()
        write_frame(sink, reply)


if __name__ == "__main__":
    sys.exit(main())
