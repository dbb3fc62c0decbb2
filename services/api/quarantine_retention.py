"""Quarantine retention while the API runs: purge at startup, then every hour.

:class:`RetentionSweeper` applies ``NEURONOVA_QUARANTINE_RETENTION_DAYS``
(:meth:`neuronova_lib.ingest.Quarantine.purge`) once when the API starts, so a
platform that was down for weeks does not keep expired files until the first
tick, then from one daemon thread every ``interval`` seconds. The app's
lifespan starts and stops it; a failed sweep is logged and retried on the next
tick, never taking the API down.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from neuronova_lib.ingest import Quarantine

log = logging.getLogger(__name__)

#: Seconds between two sweeps.
SWEEP_INTERVAL = 3600.0


class RetentionSweeper:
    """Purges expired quarantine entries now and then every ``interval`` seconds."""

    def __init__(self, settings: Any, *, interval: float = SWEEP_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.settings = settings
        self.interval = interval
        self.sweeps = 0
        self.removed: list[str] = []  # every sha256 removed since start, in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> list[str]:
        """One purge with the configured retention; what it removed (logged)."""
        try:
            removed = Quarantine(self.settings).purge()
        except Exception:
            log.exception("quarantine retention sweep failed; retrying in %.0f s", self.interval)
            return []
        finally:
            self.sweeps += 1
        self.removed.extend(removed)
        if removed:
            log.info("quarantine retention (%g days): removed %d file(s): %s",
                     self.settings.quarantine_retention_days, len(removed), ", ".join(removed))
        return removed

    def start(self) -> None:
        """Sweep once now (in the caller), then start the hourly thread."""
        if self._thread is not None:
            return
        self.sweep()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="quarantine-retention",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (a sweep in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sweep()
