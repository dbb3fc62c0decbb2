"""The platform's Dask cluster: where it is, a client to it, and the checks before a run.

Everything the platform runs on Dask (bulk transcoding, upload jobs,
inference) gets its client from :func:`platform_client`:

* ``NEURONOVA_DASK_SCHEDULER`` set: that scheduler (an existing cluster:
  ``dask scheduler``/``dask worker``, dask-gateway, dask-kubernetes,
  dask-jobqueue); ``up`` starts no Dask of its own;
* otherwise, with ``NEURONOVA_DASK_ENABLED`` (the default): the scheduler and
  workers ``up`` runs under its supervisor, on loopback
  (``tcp://127.0.0.1:NEURONOVA_DASK_PORT``).

Workers of a cluster the platform did not start are checked before a run
(:func:`check_workers`: each must import this package, at the client's
version) and so are the paths a run reads (:func:`check_paths`: a folder only
the client sees is refused, since the workers read the files themselves).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import cloudpickle

import neuronova_lib

from . import probe

log = logging.getLogger(__name__)

# The probes must reach a worker that lacks this package: send them by value.
cloudpickle.register_pickle_by_value(probe)

#: Where nginx serves the platform's own Dask dashboard.
DASHBOARD_PREFIX = "/dask"


class ComputeUnavailable(RuntimeError):
    """No Dask cluster is configured, or its scheduler does not answer."""


class WorkerMismatch(RuntimeError):
    """Workers that lack this package, or run another version of it."""


class PathsNotShared(RuntimeError):
    """Paths the client sees and (some) workers do not."""


def own_scheduler(settings: Any) -> str | None:
    """The address of the scheduler ``up`` runs, or ``None`` when it runs none."""
    if settings.dask_scheduler or not settings.dask_enabled:
        return None
    return f"tcp://127.0.0.1:{settings.dask_port}"


def scheduler_address(settings: Any) -> str | None:
    """The platform's scheduler: ``NEURONOVA_DASK_SCHEDULER``, else its own, else ``None``."""
    return settings.dask_scheduler or own_scheduler(settings)


def answers(address: str, timeout: float = 1.0) -> bool:
    """Whether something listens at a ``tcp://host:port`` address (no Dask handshake)."""
    parts = urlsplit(address)
    if parts.scheme not in ("tcp", "") or not parts.hostname or not parts.port:
        return True  # tls://, ucx://, a scheduler file...: let the client find out
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            return True
    except OSError:
        return False


def scheduler_for_run(settings: Any, requested: str | None = None) -> str | None:
    """The scheduler a bulk run uses: ``requested`` (``--scheduler``), else the platform's
    cluster when one is configured and answers, else ``None`` (a ``LocalCluster``)."""
    if requested:
        return requested
    if settings.dask_scheduler:
        return str(settings.dask_scheduler)
    own = own_scheduler(settings)
    return own if own and answers(own, timeout=0.5) else None


def platform_client(settings: Any, *, timeout: float = 30.0) -> Any:
    """A ``distributed.Client`` to the platform's cluster; the caller closes it.

    Use it as ``with platform_client(settings) as client: ...``.

    Raises
    ------
    ComputeUnavailable
        No cluster is configured (``NEURONOVA_DASK_ENABLED=false`` and no
        ``NEURONOVA_DASK_SCHEDULER``), or its scheduler does not answer.
    """
    from distributed import Client

    address = scheduler_address(settings)
    if address is None:
        raise ComputeUnavailable(
            "the platform has no Dask cluster: set NEURONOVA_DASK_SCHEDULER to an existing "
            "scheduler, or NEURONOVA_DASK_ENABLED=true and start the platform (`neuronova up`)"
        )
    if not answers(address):
        raise ComputeUnavailable(
            f"no Dask scheduler answers at {address}: "
            + ("check NEURONOVA_DASK_SCHEDULER" if settings.dask_scheduler
               else "start the platform (`neuronova up`)")
        )
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ComputeUnavailable(f"the Dask scheduler at {address} did not answer ({exc})") \
            from exc


def dashboard_link(client: Any, settings: Any = None) -> str | None:
    """The dashboard of ``client``'s scheduler as users reach it, or ``None`` if it has none.

    The platform's own scheduler is behind nginx (``<public URL>/dask/status``).
    Any other scheduler's link is Dask's, given only when that page answers: a
    scheduler started with ``--no-dashboard`` still runs its HTTP server (and
    reports its port), but serves no dashboard there.
    """
    try:
        info = client.scheduler_info(n_workers=0)
    except Exception:  # noqa: BLE001 - a link is never worth failing a run
        return None
    if not (info.get("services") or {}).get("dashboard"):
        return None
    if settings is not None and own_scheduler(settings) == client.scheduler.address:
        return f"{settings.public_url}{DASHBOARD_PREFIX}/status"
    try:
        link = str(client.dashboard_link)
        import requests

        answer = requests.get(link, timeout=3, allow_redirects=True)
        return link if answer.status_code == 200 else None
    except Exception:  # noqa: BLE001 - unreachable from here: no link to give
        return None


def check_workers(client: Any) -> dict[str, str]:
    """Every worker imports this package at the client's version; ``{worker: version}``.

    Raises
    ------
    WorkerMismatch
        Naming each worker that lacks the package (or cannot import it) or runs
        another version, with what to do.
    """
    found = client.run(probe.package_info, on_error="return")
    mine = neuronova_lib.__version__
    problems = []
    versions: dict[str, str] = {}
    for worker, info in sorted(found.items()):
        if isinstance(info, BaseException):
            problems.append(f"{worker}: cannot run the check ({type(info).__name__}: {info})")
        elif info.get("version") is None:
            problems.append(f"{worker} (host {info.get('host')}): neuronova_lib is not "
                            f"installed ({info.get('error')})")
        elif info["version"] != mine:
            problems.append(f"{worker} (host {info.get('host')}): neuronova_lib "
                            f"{info['version']} ({info.get('file')}), the client has {mine}")
        else:
            versions[worker] = info["version"]
    if problems:
        raise WorkerMismatch(
            "Dask workers that cannot run the platform's tasks:\n  " + "\n  ".join(problems)
            + f"\nInstall neuronova {mine} in every worker's environment (the same "
            "environment as the client: `pip install neuronova==" + mine + "` or this "
            "checkout), restart those workers, then run again."
        )
    if not found:
        log.warning("the Dask scheduler has no workers yet; tasks wait until one joins")
    return versions


def check_paths(client: Any, paths: Iterable[str]) -> None:
    """Every worker sees each of ``paths`` (the workers read the files themselves).

    Raises
    ------
    PathsNotShared
        Naming the paths and the workers that do not see them.
    """
    wanted = sorted(set(paths))
    if not wanted:
        return
    found = client.run(probe.missing_paths, wanted, on_error="return")
    lines = []
    for worker, missing in sorted(found.items()):
        if isinstance(missing, BaseException):
            lines.append(f"{worker}: cannot check ({type(missing).__name__}: {missing})")
        elif missing:
            lines.append(f"{worker} does not see {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if lines:
        raise PathsNotShared(
            "the Dask workers read the files themselves, and these paths exist only where "
            "the client runs:\n  " + "\n  ".join(lines) + "\nPut the files on storage every "
            "worker mounts at the same path (a shared file system), or store them in Orthanc "
            "first and transcode orthanc:<study UID>; then run again."
        )
