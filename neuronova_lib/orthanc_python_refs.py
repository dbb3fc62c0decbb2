"""Give back the references orthanc-python 4.0 leaks on every REST callback.

Debian 12's ``orthanc-python`` 4.0 builds each callback's keyword arguments
with ``PyDict_SetItemString(kw, name, value.Release())`` (``RestCallbacks.cpp``):
``PyDict_SetItemString`` does not steal the reference that ``Release()`` hands
over, so every request leaves one reference, never dropped, on ``method``,
``groups``, ``get``, ``headers`` and ``body`` and on each value inside ``get``
and ``headers``. None of them is ever freed: about 0.4 KB of Python objects
per request with wrk's two headers, 1.3–1.6 KB through nginx and the guard,
and Orthanc's memory grows without end. Upstream fixed it in orthanc-python
4.1 (changeset "fixing more PyDict_SetItemString()", 2023-08-30).

The objects are the very ones the plugin receives, so the plugin can drop the
leaked reference itself (``Py_DecRef``) once the callback has used them, while
orthanc-python's own dictionary still holds them. Whether the installed
orthanc-python leaks is measured, not assumed from its version: a probe
request through Orthanc's REST API keeps the arguments it received and, once
orthanc-python has dropped its own dictionary, counts the references left
(:func:`leaked_references`). A fixed or patched orthanc-python shows none and
nothing is released; any count but the 4.0 pattern leaves the callbacks
untouched (and says so in Orthanc's log), since a wrong guess here would free
objects still in use.

Not covered: a header or query key sent twice (orthanc-python replaces the
first value in its dictionary, and that value's leaked reference is out of
reach); a few bytes per such request.

No ``orthanc`` import here: the plugin passes its calls in, so the counting is
tested in plain Python.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable
from typing import Any

#: Keyword arguments of a REST callback that orthanc-python 4.0 leaks, with their contents.
LEAKED_ARGUMENTS = ("method", "groups", "get", "headers", "body")
#: Those whose values (``dict`` of ``str``) each leak one reference too.
LEAKED_VALUES = ("get", "headers")

_decref = ctypes.pythonapi.Py_DecRef
_decref.argtypes = [ctypes.py_object]
_decref.restype = None


def release(request: dict[str, Any]) -> None:
    """Drop the one reference orthanc-python 4.0 leaked on each argument of this request.

    Call it while orthanc-python still holds the arguments (inside the callback), and
    only where :func:`leaks_one_each` said this orthanc-python leaks.
    """
    for name in LEAKED_VALUES:
        values = request.get(name)
        if isinstance(values, dict):
            for value in values.values():
                _decref(value)
    for name in LEAKED_ARGUMENTS:
        if name in request:
            _decref(request[name])


def kept_arguments(request: dict[str, Any]) -> tuple[list[object], list[object]]:
    """The arguments of one request, and the values inside them, for a probe to count."""
    arguments = [request[name] for name in LEAKED_ARGUMENTS if name in request]
    values = [value for name in LEAKED_VALUES for value in request.get(name, {}).values()]
    return arguments, values


def leaked_references(kept: list[object]) -> set[int]:
    """References still held on each kept object beyond ``kept`` itself, once the call ended.

    Why this way: after orthanc-python has dropped its dictionary, the list is the only
    rightful owner, so any count above it is a leak, whatever CPython's call machinery
    does while the callback runs.
    """
    # sys.getrefcount sees the list's reference and its own argument.
    return {sys.getrefcount(kept[index]) - 2 for index in range(len(kept))}


def leaks_one_each(arguments: set[int], values: set[int]) -> bool | None:
    """True: orthanc-python 4.0's leak (one per argument and per value); False: no leak.

    None: any other count, which this module does not know how to give back. A value
    inside ``get`` or ``headers`` also counts the reference of its dictionary, which the
    probe keeps: 1 without a leak, 2 with one.
    """
    if arguments == {1} and values <= {2}:
        return True
    if arguments <= {0} and values <= {1}:
        return False
    return None


class ReferenceKeeper:
    """Wraps REST callbacks so they give back what orthanc-python leaked, if it leaks.

    ``probe`` makes one GET request through Orthanc's REST API (the plugin passes
    ``orthanc.RestApiGetAfterPlugins``), to :attr:`PROBE_ROUTE` registered with
    :meth:`probe_callback`; ``log`` writes a warning to Orthanc's log. The first
    wrapped call runs the probe; until it has answered, nothing is released.
    """

    PROBE_ROUTE = "/neuronova/python-references-probe/([a-z]+)"
    PROBE_URI = "/neuronova/python-references-probe/probe?probe=value"

    def __init__(self, probe: Callable[[str], object], log: Callable[[str], None]) -> None:
        self._probe = probe
        self._log = log
        self._lock = threading.Lock()
        self._kept: tuple[list[object], list[object]] = ([], [])
        self.leaks: bool | None = None  # None: not measured yet

    def probe_callback(self, output: Any, uri: str, **request: Any) -> None:
        """The probe route: keep this request's arguments for counting, answer 200."""
        self._kept = kept_arguments(request)
        output.AnswerBuffer(b"ok", "text/plain")

    def measure(self) -> bool:
        """Probe once: does this orthanc-python leak one reference per argument?"""
        with self._lock:
            if self.leaks is not None:
                return self.leaks
            verdict = None
            try:
                self._probe(self.PROBE_URI)
                arguments, values = self._kept
                counts = (leaked_references(arguments), leaked_references(values))
                verdict = leaks_one_each(*counts)
                if verdict is None:
                    self._log(f"orthanc-python left {counts} references on REST callback "
                              "arguments and their values; expected the 4.0 leak or none, "
                              "so none are given back")
            except Exception as exc:  # the probe must never break a request
                self._log(f"orthanc-python reference probe failed ({exc!r}); "
                          "REST callback arguments are left as they are")
            finally:
                self._kept = ([], [])
            self.leaks = bool(verdict)
            if self.leaks:
                self._log("orthanc-python leaks one reference per REST callback argument "
                          "(fixed upstream in 4.1): NeuroNova's plugin gives them back")
            return self.leaks

    def wrap(self, callback: Callable[..., None]) -> Callable[..., None]:
        """``callback`` as a REST callback that releases its leaked arguments afterwards."""
        def released(output: Any, uri: str, **request: Any) -> None:
            try:
                callback(output, uri, **request)
            finally:
                if self.leaks or (self.leaks is None and self.measure()):
                    release(request)

        released.__name__ = getattr(callback, "__name__", "callback")
        released.__doc__ = callback.__doc__
        return released
