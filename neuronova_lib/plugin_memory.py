"""A tracemalloc view of Python memory inside Orthanc, for NeuroNova's plugin (debug only).

Registered by ``orthanc/plugins/neuronova_wado.py`` only when
``NEURONOVA_ORTHANC_MEMORY_DEBUG`` is on, on Orthanc's own port (loopback, basic
auth; nginx never routes to it). ``GET /neuronova/debug/memory/start`` starts
tracing and takes a baseline; ``.../snapshot`` answers what was allocated since
and is still held, grouped by Python traceback, plus the blocks allocated where
no Python frame was running (``<unknown>``: C code such as orthanc-python's own
argument building) by size; ``.../stop`` stops tracing. That view found the
orthanc-python 4.0 leak (``orthanc_python_refs``): six blocks per request, all
``<unknown>``, sized as the callback's ``get`` and ``headers`` dictionaries,
their values and the method string.
"""

from __future__ import annotations

import gc
import json
import threading
import tracemalloc
from collections import Counter
from typing import Any

ROUTE = "/neuronova/debug/memory/(start|snapshot|stop)"
#: Python frames kept per allocation: enough to see the plugin's caller.
FRAMES = 8
TOP = 20

_lock = threading.Lock()
_baseline: list[tracemalloc.Snapshot] = []


def report(action: str) -> dict[str, Any]:
    """Start, read or stop tracing; the answer as a JSON-ready dict."""
    with _lock:
        if action == "start":
            tracemalloc.start(FRAMES)
            _baseline[:] = [tracemalloc.take_snapshot()]
            return {"tracing": True}
        if action == "stop":
            tracemalloc.stop()
            _baseline.clear()
            return {"tracing": False}
        if not _baseline:
            return {"tracing": False, "error": "GET .../start first"}
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        growth = snapshot.compare_to(_baseline[0], "traceback")[:TOP]
        unknown: Counter[int] = Counter(
            trace.size for trace in snapshot.traces if trace.traceback[0].filename == "<unknown>"
        )
        current, peak = tracemalloc.get_traced_memory()
        return {
            "tracing": True,
            "traced_bytes": current,
            "peak_bytes": peak,
            "gc_objects": len(gc.get_objects()),
            "growth": [{"bytes": stat.size_diff, "blocks": stat.count_diff,
                        "traceback": stat.traceback.format()} for stat in growth],
            "no_python_frame_blocks_by_size": dict(unknown.most_common(TOP)),
        }


def callback(output: Any, uri: str, **request: Any) -> None:
    """The REST callback (orthanc-python's signature)."""
    body = json.dumps(report(request["groups"][0]), indent=1).encode()
    output.AnswerBuffer(body, "application/json")
