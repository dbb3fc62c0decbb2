"""The reference give-back for orthanc-python 4.0's REST callbacks, in plain Python.

The real leak and its fix are checked against Orthanc itself in test_soak_e2e.py; here,
the counting and the release are checked on objects leaked the way 4.0 leaks them.
"""

from __future__ import annotations

import ctypes
from typing import Any

from neuronova_lib.orthanc_python_refs import (
    ReferenceKeeper,
    kept_arguments,
    leaked_references,
    leaks_one_each,
    release,
)

_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = [ctypes.py_object]


def _arguments(leak: bool) -> dict[str, Any]:
    """A callback's keyword arguments, built as orthanc-python builds them (4.0 if ``leak``)."""
    kw: dict[str, Any] = {
        "method": "".join(["G", "ET"]),
        "groups": tuple(["1.2." + str(n) for n in range(3)]),
        "get": {"window": "".join(["40", "0"])},
        "headers": {"accept": "".join(["*/", "*"]), "host": "127.0.0.1:" + str(8000 + 42)},
    }
    if leak:
        for name in ("get", "headers"):
            for value in kw[name].values():
                _incref(value)
        for value in list(kw.values()):
            _incref(value)
    return kw


class _Output:
    def AnswerBuffer(self, body: bytes, content_type: str) -> None:  # noqa: N802 (Orthanc's name)
        self.body = body


def _keeper(leak: bool, log: list[str]) -> ReferenceKeeper:
    """A keeper whose probe calls its probe route as orthanc-python would: a dict, then gone."""
    keeper: ReferenceKeeper

    def probe(uri: str) -> None:
        kw = _arguments(leak)
        keeper.probe_callback(_Output(), uri, **kw)
        del kw

    keeper = ReferenceKeeper(probe, log.append)
    return keeper


def test_counts_tell_the_40_leak_from_none() -> None:
    for leak, expected in ((True, True), (False, False)):
        kw = _arguments(leak)
        arguments, values = kept_arguments(kw)
        del kw
        assert leaks_one_each(leaked_references(arguments), leaked_references(values)) is expected
    assert leaks_one_each({2}, {3}) is None
    assert leaks_one_each({1}, {1}) is None
    assert leaks_one_each({0}, {2}) is None


def test_release_frees_what_40_leaked() -> None:
    kw = _arguments(leak=True)
    arguments, values = kept_arguments(kw)
    release(kw)
    del kw
    assert leaked_references(arguments) == {0}
    assert leaked_references(values) == {1}  # held by their dictionary in ``arguments`` only


def test_keeper_releases_only_where_the_probe_saw_the_leak() -> None:
    for leak in (True, False):
        log: list[str] = []
        keeper = _keeper(leak, log)
        seen: list[Any] = []
        wrapped = keeper.wrap(lambda output, uri, **request: seen.append(request))
        kw = _arguments(leak)
        arguments, values = kept_arguments(kw)
        wrapped(_Output(), "/uri", **kw)
        del kw, seen
        assert keeper.leaks is leak
        assert leaked_references(arguments) == {0}, "the request's arguments are all freed"
        assert leaked_references(values) == {1}  # by their dictionary in ``arguments``
        assert bool(log) is leak  # one warning when it gives references back


def test_keeper_leaves_unknown_counts_alone() -> None:
    log: list[str] = []

    def probe(uri: str) -> None:
        kw = _arguments(leak=True)
        for value in kw.values():  # two leaked references: not 4.0's pattern
            _incref(value)
        keeper.probe_callback(_Output(), uri, **kw)

    keeper = ReferenceKeeper(probe, log.append)
    assert keeper.measure() is False
    assert "none are given back" in log[0]
