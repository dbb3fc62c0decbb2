"""The client side of a bulk run: list, plan, submit to Dask, record, report.

The client never touches image bytes. It lists the sources into the
manifest, then walks the manifest's unfinished rows in batches and keeps a
bounded number of batches in flight on the cluster (twice the worker
threads), so its memory does not depend on the size of the archive. Each
finished batch is recorded in one manifest transaction. A batch whose worker
died, or that ``Client.restart`` cancelled, is submitted again (up to
``max_attempts``); the instances of a batch that keeps failing are recorded
as ``worker_lost``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from neuronova_lib.config import Settings, get_settings
from neuronova_lib.htj2k import HTJ2K_LOSSLESS
from neuronova_lib.reasons import Reason
from neuronova_lib.security.secret_store import orthanc_service_account

from .batching import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_ITEMS, batches
from .manifest import Manifest, exclusive
from .orthanc_source import OrthancAccess
from .report import Progress, RunSummary, Tally, write_report
from .results import InstanceResult, State
from .sources import (BackupSource, FilesSource, FolderSource, Item, OrthancSource, Source,
                      iter_items, parse_source)
from .worker import ROUTES, WorkerConfig, process_batch

logger = logging.getLogger(__name__)

#: Called in the client after each batch is recorded, with that batch's results.
BatchCallback = Callable[[list[dict[str, Any]]], None]


class BulkSetupError(RuntimeError):
    """The run cannot start (Orthanc unreachable, bad option); nothing was changed."""


def bulk_dir(settings: Settings) -> Path:
    """``$NEURONOVA_HOME/bulk``: manifest, reports, backups of originals."""
    return settings.home / "bulk"


def transcode_sources(
    sources: Sequence[str | Source],
    *,
    settings: Settings | None = None,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_ITEMS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    max_attempts: int = 3,
    syntax: str = HTJ2K_LOSSLESS,
    manifest_path: Path | None = None,
    report_path: Path | None = None,
    backup_dir: Path | None = None,
    worker_orthanc_url: str | None = None,
    route: str = "transcode",
    sender: str | None = None,
    dry_run: bool = False,
    progress: bool = False,
    on_batch: BatchCallback | None = None,
    stop: threading.Event | None = None,
) -> RunSummary:
    """Transcode every instance of ``sources`` to HTJ2K lossless on Dask and store it in Orthanc.

    Resumable and idempotent: instances already ``done`` in the manifest are
    not sent again; a second run over the same sources changes nothing.

    Parameters
    ----------
    sources : sequence of str or Source
        Folders, files, ``@LIST``, ``orthanc:UID[,UID...]``, ``orthanc:all``
        (see :mod:`neuronova_lib.bulk.sources`).
    settings : Settings, optional
        Data dir and Orthanc; :func:`~neuronova_lib.config.get_settings` by default.
    client : distributed.Client, optional
        Use this client (not closed here). Otherwise ``scheduler``, otherwise
        a ``LocalCluster`` with ``workers`` single-threaded worker processes
        (default: one per core), closed at the end.
    scheduler : str, optional
        ``tcp://host:port`` of a running scheduler.
    workers : int, optional
        Worker processes of the local cluster.
    batch_size, batch_bytes : int
        Most instances, and about the most bytes, in one task.
    max_attempts : int
        Submissions of a batch whose worker dies or is restarted.
    syntax : str
        Target HTJ2K transfer syntax.
    manifest_path, report_path, backup_dir : Path, optional
        Defaults under ``$NEURONOVA_HOME/bulk/``: ``manifest.db``,
        ``reports/<run id>.json``, ``backup/``. On a cluster, ``backup_dir``
        must be a folder every worker reaches (see :mod:`.worker`).
    worker_orthanc_url : str, optional
        Orthanc as the workers reach it, if not ``settings.orthanc_url``.
    route, sender : str
        Recorded with every file the ingest gate refuses (quarantine):
        ``route`` is ``upload``, ``transcode`` or ``demo``; ``sender`` who sent
        the files. Every file is checked by the gate (limits from
        ``settings``) before it is parsed; refusals go to
        ``settings.quarantine_dir``, which workers must reach.
    dry_run : bool
        List and count only: no manifest writes, no cluster, no Orthanc writes.
    progress : bool
        Show a progress bar and messages on stderr.
    on_batch : callable, optional
        Called with each batch's results once recorded (progress displays, tests).
    stop : threading.Event, optional
        When set, no further batches are submitted; those in flight finish and
        are recorded, and the run ends ``interrupted``.

    Returns
    -------
    RunSummary
        Also written as the head of the JSON report (``summary.report``).

    Raises
    ------
    SourceError
        A source spec that does not exist or names a study Orthanc lacks.
    BulkSetupError
        Orthanc does not answer, or the options are inconsistent.
    ManifestBusyError
        Another run holds the manifest.
    """
    settings = settings or get_settings()
    if route not in ROUTES:
        raise BulkSetupError(f"route must be one of {', '.join(ROUTES)}, not {route!r}")
    parsed = [parse_source(s) if isinstance(s, str) else s for s in sources]
    specs = [s.spec for s in parsed]
    if min(batch_size, batch_bytes, max_attempts, workers or 1) < 1:
        raise BulkSetupError("--batch, --workers, batch bytes and attempts must be at least 1")
    started = time.perf_counter()
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(3).hex()
    home = bulk_dir(settings)
    manifest_path = manifest_path or home / "manifest.db"
    backup_dir = backup_dir or home / "backup"
    orthanc = _connect(settings)
    for source in parsed:
        if isinstance(source, OrthancSource):
            source.check(orthanc)
    # Interrupted in-place replacements come first: their originals are only in backups.
    leftovers = BackupSource(backup_dir, f"backups:{backup_dir}")
    if dry_run:
        return _dry_run([leftovers, *parsed], orthanc, manifest_path, run_id, specs, started)

    say = Progress() if progress else None
    with exclusive(manifest_path), Manifest(manifest_path) as manifest:
        manifest.start_run(run_id, specs)
        manifest.discover(iter_items([leftovers, *parsed], orthanc), run_id)
        before = manifest.counts(run_id)
        listed_s = time.perf_counter() - started
        todo = before[State.PENDING] + before[State.FAILED]
        tally = Tally()
        info: dict[str, Any] = {"scheduler": None, "dashboard": None, "workers": 0,
                                "cluster_s": 0.0, "process_s": 0.0, "resubmitted": 0}
        try:
            if todo:
                account = orthanc_service_account(settings.secrets_dir)
                config = WorkerConfig.for_settings(
                    settings, orthanc_url=worker_orthanc_url or settings.orthanc_url,
                    username=account["username"], password=account["password"],
                    backup_dir=str(backup_dir), syntax=syntax, route=route, sender=sender,
                )
                _process(
                    manifest, run_id, todo, config, tally, info, settings=settings,
                    shared=_shared_paths(parsed), client=client,
                    scheduler=scheduler, workers=workers, batch_size=batch_size,
                    batch_bytes=batch_bytes, max_attempts=max_attempts, say=say,
                    on_batch=on_batch, stop=stop,
                )
        except KeyboardInterrupt:
            logger.warning("interrupted: results in flight are lost and will be redone by a re-run")
        finally:
            if say:
                say.close()
        summary = _summary(manifest, run_id, specs, before, tally, info, listed_s, started,
                           manifest_path, backup_dir)
        summary.report = str(report_path or home / "reports" / f"{run_id}.json")
        write_report(Path(summary.report), summary, manifest)
        manifest.finish_run(run_id, summary.status, {"counts": summary.counts,
                                                     "this_run": summary.this_run})
    return summary


def _connect(settings: Settings) -> OrthancAccess:
    account = orthanc_service_account(settings.secrets_dir)
    orthanc = OrthancAccess(settings.orthanc_url, account["username"], account["password"])
    try:
        orthanc.ping()
    except Exception as exc:
        raise BulkSetupError(
            f"Orthanc at {settings.orthanc_url} does not answer ({exc}); start the platform "
            "(`neuronova up`) or point NEURONOVA_HOME / NEURONOVA_ORTHANC_PORT at it"
        ) from exc
    return orthanc


@contextmanager
def local_client(workers: int | None = None, **cluster_kwargs: Any) -> Iterator[Any]:
    """A ``LocalCluster`` set up for transcoding, and a client to it; both closed on exit.

    One single-threaded worker process per core (pydicom's parsing holds the
    GIL; the codecs do not), and Dask's statistical profiler off: it samples
    the running task's stack every 10 ms, which costs a CPU-bound task a few
    percent and tells nothing here. This is the cluster ``neuronova
    transcode`` starts without ``--scheduler``.

    Worker processes are Dask's defaults (daemonic): the ingest gate's checker
    is a program each worker starts with :mod:`subprocess`, which any process
    may do; the checkers end with their worker.

    Parameters
    ----------
    workers : int, optional
        Worker processes (default: ``os.cpu_count()``).
    **cluster_kwargs
        Passed to ``LocalCluster`` (e.g. ``dashboard_address=":0"``).
    """
    import dask
    from distributed import Client, LocalCluster

    n = workers or os.cpu_count() or 1
    # The nanny hands this configuration to each worker process it starts (a restart too).
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               **cluster_kwargs)
        with cluster, Client(cluster) as client:
            yield client


def _shared_paths(sources: Sequence[Source]) -> list[str]:
    """What the workers must see for ``sources``: each folder with one file in it (a folder
    that exists on a worker but is another, empty one is not the client's), each listed
    file's folder with its first file."""
    paths: set[str] = set()
    for source in sources:
        if isinstance(source, FolderSource):
            paths.add(str(source.path))
            for root, _dirs, files in os.walk(source.path):
                if files:
                    paths.add(os.path.join(root, sorted(files)[0]))
                    break
        elif isinstance(source, FilesSource):
            first: dict[Path, Path] = {}
            for path in source.paths:
                first.setdefault(path.parent, path)
            paths.update(str(p) for pair in first.items() for p in pair)
    return sorted(paths)


@contextmanager
def _dask_client(client: Any, scheduler: str | None,
                 workers: int | None) -> Iterator[tuple[Any, bool]]:
    """The client to use (the caller's, one for ``scheduler``, or a local cluster's), and
    whether it is a cluster started here (whose workers are this environment)."""
    if client is not None:
        yield client, False
        return
    if scheduler:
        from distributed import Client

        try:
            remote = Client(scheduler, timeout=30, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise BulkSetupError(f"the Dask scheduler at {scheduler} does not answer ({exc}); "
                                 "check the address (tcp://host:port)") from exc
        with remote:
            yield remote, False
        return
    with local_client(workers) as local:
        yield local, True


def _check_cluster(dask: Any, shared: Sequence[str]) -> None:
    """Before the first task on a cluster not started here: the workers run this package at
    this version, and see the files to read (see :mod:`neuronova_lib.compute`)."""
    from neuronova_lib.compute import PathsNotShared, WorkerMismatch, check_paths, check_workers

    try:
        check_workers(dask)
        check_paths(dask, shared)
    except (WorkerMismatch, PathsNotShared) as exc:
        raise BulkSetupError(str(exc)) from exc


def _process(
    manifest: Manifest, run_id: str, todo: int, config: WorkerConfig, tally: Tally,
    info: dict[str, Any], *, settings: Settings, shared: Sequence[str], client: Any,
    scheduler: str | None, workers: int | None,
    batch_size: int, batch_bytes: int, max_attempts: int, say: Progress | None,
    on_batch: BatchCallback | None, stop: threading.Event | None,
) -> None:
    """Submit the unfinished rows in batches, keep a bounded number in flight, record results."""
    from distributed import as_completed

    t0 = time.perf_counter()
    from neuronova_lib.compute import dashboard_link

    with _dask_client(client, scheduler, workers) as (dask, started_here):
        if not started_here:
            _check_cluster(dask, shared)
        info["cluster_s"] = time.perf_counter() - t0
        info["scheduler"] = dask.scheduler.address
        info["dashboard"] = dashboard_link(dask, settings)
        threads = _threads(dask)
        info["workers"] = threads
        if say:
            board = f"Dask dashboard: {info['dashboard']}" if info["dashboard"] else \
                "Dask: the scheduler runs no dashboard"
            say.message(f"{board}  (scheduler {info['scheduler']}, {threads} worker threads)")
            say.start(todo)
        else:
            logger.info("Dask dashboard: %s", info["dashboard"])
        t1 = time.perf_counter()
        plan = batches(manifest.todo(run_id), batch_size, batch_bytes)
        flight: dict[str, tuple[list[Item], int]] = {}
        completed = as_completed(loop=dask.loop)
        sequence = 0
        limit_checked = time.monotonic()
        limit = max(2 * threads, 2)

        def submit(batch: list[Item], attempt: int) -> None:
            nonlocal sequence
            sequence += 1
            key = f"neuronova-transcode-{run_id}-{sequence}"
            future = dask.submit(process_batch, batch, config, key=key, pure=False, retries=1)
            flight[future.key] = (batch, attempt)
            completed.add(future)

        def fill() -> None:
            nonlocal limit, limit_checked
            if time.monotonic() - limit_checked > 2.0:  # adaptive clusters grow and shrink
                limit, limit_checked = max(2 * _threads(dask), 2), time.monotonic()
            while len(flight) < limit and not (stop and stop.is_set()):
                batch = next(plan, None)
                if batch is None:
                    return
                submit(batch, 1)

        try:
            fill()
            for future in completed:
                batch, attempt = flight.pop(future.key)
                results, cause = _outcome(future)
                future.release()
                if results is None:
                    if attempt < max_attempts:
                        info["resubmitted"] += 1
                        logger.warning("batch of %d lost (%s); submitting it again (attempt %d)",
                                       len(batch), cause, attempt + 1)
                        submit(batch, attempt + 1)
                        continue
                    results = [_lost(item, cause, attempt) for item in batch]
                manifest.record(results, run_id)
                tally.add(results)
                if say:
                    say.update(len(results), tally)
                if on_batch:
                    on_batch(results)
                fill()
        except BaseException:
            for future in list(completed.futures):
                future.cancel()
            raise
        finally:
            info["process_s"] = time.perf_counter() - t1


def _outcome(future: Any) -> tuple[list[dict[str, Any]] | None, str]:
    """A finished batch's results, or ``None`` and why it was lost.

    A future reported finished can still be cancelled before its result is
    fetched (``Client.restart`` from another thread, or its worker gone with
    the data): that batch is lost like any other, not the run.
    """
    from concurrent.futures import CancelledError

    if future.status == "finished":
        try:
            return future.result(), ""
        except CancelledError:
            return None, "cancelled (workers restarted)"
        except Exception as exc:  # noqa: BLE001 - its data went with its worker
            return None, repr(exc)
    if future.status == "cancelled":
        return None, "cancelled (workers restarted)"
    return None, repr(future.exception())


def _threads(dask: Any) -> int:
    try:
        return int(sum(dask.nthreads().values()))
    except Exception:  # noqa: BLE001 - a scheduler busy now: keep going with a floor
        return 1


def _lost(item: Item, cause: str, attempts: int) -> dict[str, Any]:
    return InstanceResult(
        item.key, State.FAILED, Reason.WORKER_LOST,
        f"its batch was lost {attempts} times ({cause}); check worker memory and logs, "
        "then run again",
    ).as_dict()


def _summary(
    manifest: Manifest, run_id: str, specs: list[str], before: dict[str, int], tally: Tally,
    info: dict[str, Any], listed_s: float, started: float, manifest_path: Path,
    backup_dir: Path,
) -> RunSummary:
    counts = manifest.counts(run_id)
    process_s = info["process_s"]
    rate = tally.processed / process_s if process_s else 0.0
    mbps = tally.bytes_in / 1e6 / process_s if process_s else 0.0
    if counts[State.PENDING]:  # stopped before the end (Ctrl-C, stop event, lost client)
        status = "interrupted"
    else:
        status = "failures" if counts[State.FAILED] else "complete"
    backups = sum(1 for _ in backup_dir.glob("*.dcm")) if backup_dir.is_dir() else 0
    return RunSummary(
        run_id=run_id, status=status, sources=specs, counts=counts,
        listed=sum(counts.values()),
        already_finished=before[State.DONE] + before[State.SKIPPED],
        this_run={
            "processed": tally.processed, "done": tally.done, "skipped": tally.skipped,
            "failed": tally.failed, "bytes_in": tally.bytes_in, "bytes_out": tally.bytes_out,
            "ratio": round(tally.ratio, 4), "instances_per_s": round(rate, 2),
            "mb_per_s": round(mbps, 3), "batches_resubmitted": info["resubmitted"],
        },
        failure_reasons=manifest.reasons(run_id, State.FAILED),
        skip_reasons=manifest.reasons(run_id, State.SKIPPED),
        timings={"list": round(listed_s, 3), "cluster": round(info["cluster_s"], 3),
                 "process": round(process_s, 3),
                 "total": round(time.perf_counter() - started, 3)},
        scheduler=info["scheduler"], dashboard=info["dashboard"], workers=info["workers"],
        manifest=str(manifest_path), backup_dir=str(backup_dir), backups_left=backups,
    )


def _dry_run(
    parsed: list[Source], orthanc: OrthancAccess, manifest_path: Path, run_id: str,
    specs: list[str], started: float,
) -> RunSummary:
    """Count what a run would do, reading the manifest only."""
    counts = {state.value: 0 for state in State}
    todo_bytes = 0
    with Manifest(manifest_path, readonly=True) as manifest:
        chunk: list[Item] = []

        def flush() -> None:
            nonlocal todo_bytes
            states = manifest.states([i.key for i in chunk])
            for item in {i.key: i for i in chunk}.values():
                state = states.get(item.key, State.PENDING.value)
                counts[state] += 1
                if state in (State.PENDING, State.FAILED):
                    todo_bytes += item.size
            chunk.clear()

        for item in iter_items(parsed, orthanc):
            chunk.append(item)
            if len(chunk) >= 1000:
                flush()
        flush()
    finished = counts[State.DONE] + counts[State.SKIPPED]
    return RunSummary(
        run_id=run_id, status="dry_run", sources=specs, counts=counts,
        listed=sum(counts.values()), already_finished=finished,
        this_run={"processed": 0, "done": 0, "skipped": 0, "failed": 0,
                  "bytes_in": todo_bytes, "bytes_out": 0, "ratio": 0.0,
                  "instances_per_s": 0.0, "mb_per_s": 0.0, "batches_resubmitted": 0},
        failure_reasons={}, skip_reasons={},
        timings={"list": round(time.perf_counter() - started, 3),
                                     "cluster": 0.0, "process": 0.0,
                                     "total": round(time.perf_counter() - started, 3)},
        manifest=str(manifest_path),
    )
