"""Records every process a test starts, so that a test without the ``e2e`` marker cannot start one.

``make test-fast`` (``pytest -m "not e2e"``) promises to start no process. That
promise is kept by this recorder, not by reading the tests: CPython raises an
audit event for ``subprocess.Popen``, ``os.fork``, ``os.posix_spawn``,
``os.system`` and friends; multiprocessing's ``spawn`` and ``forkserver``
start methods call ``_posixsubprocess.fork_exec`` without one, so that
function is wrapped to record the call and then do exactly what it did. Nothing
is replaced: every process still starts as before; the conftest hook fails the
test afterwards, naming it and what it started.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest

#: Audit events that mean "a new process" (PEP 578 table of CPython's events).
PROCESS_EVENTS = frozenset({
    "subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn",
    "os.system", "os.startfile", "pty.spawn",
})

_lock = threading.Lock()
_watching = False
_started: list[str] = []


def _describe(args: Any) -> str:
    text = repr(args)
    return text if len(text) <= 240 else text[:237] + "..."


def _record(what: str) -> None:
    with _lock:
        if _watching:
            _started.append(what)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in PROCESS_EVENTS:
        _record(f"{event} {_describe(args[:2])}")


def _install() -> None:
    sys.addaudithook(_audit)  # cannot be removed again: it checks _watching
    try:
        import _posixsubprocess
    except ImportError:  # not POSIX: the audit events are all there is
        return
    original = _posixsubprocess.fork_exec
    if getattr(original, "__neuronova_recorder__", False):
        return

    def fork_exec(*args: Any, **kwargs: Any) -> Any:
        # subprocess.Popen raised its own audit event already; this catches the rest.
        caller = sys._getframe(1).f_globals.get("__name__", "?")
        if caller != "subprocess":
            _record(f"fork_exec from {caller} {_describe(args[:1])}")
        return original(*args, **kwargs)

    fork_exec.__neuronova_recorder__ = True  # type: ignore[attr-defined]
    _posixsubprocess.fork_exec = fork_exec


def start_watching() -> None:
    global _watching
    with _lock:
        _started.clear()
        _watching = True


def stop_watching() -> list[str]:
    """What was started since :func:`start_watching`."""
    global _watching
    with _lock:
        _watching = False
        started, _started[:] = list(_started), []
    return started


_install()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    if item.get_closest_marker("e2e") is None:
        start_watching()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """A test that starts a process must carry ``e2e``: ``make test-fast`` starts none."""
    result = yield
    started = stop_watching()
    if started and item.get_closest_marker("e2e") is None:
        listing = "\n  ".join(started[:5]) + ("\n  ..." if len(started) > 5 else "")
        pytest.fail(f"{item.nodeid} started {len(started)} process(es) but is not marked "
                    f"@pytest.mark.e2e (make test-fast must start none):\n  {listing}",
                    pytrace=False)
    return result
