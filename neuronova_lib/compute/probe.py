"""Small functions run on every Dask worker before a run; sent *by value*.

:mod:`neuronova_lib.compute` registers this module with
``cloudpickle.register_pickle_by_value``, so a worker runs these functions
without importing anything of NeuroNova first: that is what lets them tell
"this worker lacks the package" from any other failure. Keep them
self-contained (standard library only, imports inside).
"""

from __future__ import annotations

from typing import Any


def package_info() -> dict[str, Any]:
    """The ``neuronova_lib`` this worker imports: version and where from, or why not."""
    import importlib
    import socket

    try:
        module = importlib.import_module("neuronova_lib")
    except Exception as exc:  # noqa: BLE001 - a missing or broken install, reported as such
        return {"version": None, "error": f"{type(exc).__name__}: {exc}",
                "host": socket.gethostname()}
    return {"version": getattr(module, "__version__", None),
            "file": getattr(module, "__file__", None), "host": socket.gethostname()}


def missing_paths(paths: list[str]) -> list[str]:
    """Those of ``paths`` this worker cannot see."""
    import os

    return [path for path in paths if not os.path.exists(path)]
