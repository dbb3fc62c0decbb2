"""The running platform's record, ``$NEURONOVA_HOME/run/stack.json``, written by ``neuronova up``.

``neuronova status`` and ``neuronova down`` may run in another shell, whose
environment need not carry the ports ``up`` was started with. So ``up``
records what they need — its own pid, each service's pid and start time, and
the addresses and ports in effect — in the data dir, and they read it from
there: the data dir is what names a platform, not the shell.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ..config import Settings

#: The settings ``status`` needs to probe what ``up`` started; no secrets among them.
RECORDED_SETTINGS = ("host", "port", "public_url", "api_port", "proxy_port", "orthanc_port",
                     "dicom_enabled", "dicom_host", "dicom_port", "mlflow_enabled", "mlflow_port",
                     "dask_enabled", "dask_scheduler", "dask_port", "dask_dashboard_port",
                     "dask_workers", "openemr_url", "openemr_demo", "openemr_demo_port",
                     "hub_enabled", "hub_port", "hub_api_port", "hub_proxy_api_port",
                     "hub_service_port", "dashboards_enabled", "dashboards_port")


def state_path(settings: Settings) -> Path:
    return settings.run_dir / "stack.json"


def _started_at(pid: int) -> float | None:
    """The process's start time (to tell it from a later process with a reused pid)."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_running(pid: int) -> bool:
    """True while ``pid`` runs; an exited process its parent has not reaped yet does not."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class StackState:
    """What ``up`` recorded: who supervises, which processes serve, on which ports."""

    supervisor: int
    services: dict[str, int]
    settings: dict[str, Any]
    started: float = field(default_factory=time.time)
    process_started: dict[str, float] = field(default_factory=dict)
    supervisor_started: float | None = None

    @classmethod
    def of(cls, settings: Settings, pids: dict[str, int]) -> StackState:
        pids = dict(pids)
        return cls(
            supervisor=os.getpid(), services=pids, supervisor_started=_started_at(os.getpid()),
            settings={name: getattr(settings, name) for name in RECORDED_SETTINGS},
            process_started={name: t for name, pid in pids.items()
                             if (t := _started_at(pid)) is not None},
        )

    def write(self, settings: Settings) -> None:
        """Atomically, so a ``status`` reading at the same moment never sees half a file."""
        path = state_path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({
            "supervisor": self.supervisor, "supervisor_started": self.supervisor_started,
            "services": self.services, "process_started": self.process_started,
            "settings": self.settings, "started": self.started,
        }, indent=2))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    @classmethod
    def read(cls, settings: Settings) -> StackState | None:
        """The record in ``settings``' data dir, or ``None`` when ``up`` is not running there."""
        try:
            data = json.loads(state_path(settings).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"{state_path(settings)} is unreadable ({exc}); if no "
                               "`neuronova up` runs for this data dir, delete it") from None
        return cls(supervisor=int(data["supervisor"]),
                    services={k: int(v) for k, v in data.get("services", {}).items()},
                    settings=dict(data.get("settings", {})),
                    started=float(data.get("started", 0.0)),
                    process_started={k: float(v) for k, v in
                                     data.get("process_started", {}).items()},
                   supervisor_started=data.get("supervisor_started"))

    def platform_settings(self, base: Settings) -> Settings:
        """``base`` (this shell's settings, same data dir) with the ports ``up`` used."""
        return base.model_copy(update={k: v for k, v in self.settings.items()
                                       if k in RECORDED_SETTINGS})

    def _same_process(self, pid: int, started: float | None) -> bool:
        if not process_running(pid):
            return False
        now = _started_at(pid)
        return now is not None and (started is None or abs(now - started) < 1.0)

    def supervisor_alive(self) -> bool:
        return self._same_process(self.supervisor, self.supervisor_started)

    def live_services(self) -> dict[str, int]:
        """The recorded services whose process still runs (the same process, not a reused pid)."""
        return {name: pid for name, pid in self.services.items()
                if self._same_process(pid, self.process_started.get(name))}

    @staticmethod
    def remove(settings: Settings) -> None:
        state_path(settings).unlink(missing_ok=True)
