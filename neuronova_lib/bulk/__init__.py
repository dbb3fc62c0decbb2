"""Bulk transcoding to HTJ2K lossless on Dask: folders, files or Orthanc studies into Orthanc.

Front door (the same as ``neuronova transcode``)::

    from neuronova_lib.bulk import transcode_sources
    summary = transcode_sources(["/data/incoming", "orthanc:1.2.840.1234"], progress=True)
    print(summary.line())          # counts, MB in/out, ratio, rate, report path
    summary.exit_code              # 0 all good, 1 some failed, 130 interrupted

Each instance is read on a worker, checked by the ingest gate (files only;
refusals are quarantined), transcoded and verified pixel for pixel
(:func:`neuronova_lib.transcode.transcode_to_htj2k`), stored in Orthanc and
re-read byte for byte; Orthanc instances are replaced in place with a backup
of the original (:mod:`.worker` says how, and what that can and cannot
promise). A manifest makes a run resumable and a second run a no-op.

Modules, by role:

* :mod:`.sources` — source specs and the instances they list (:class:`Item`).
* :mod:`.orthanc_source` — the Orthanc calls beyond ``OrthancStore``.
* :mod:`.manifest` — the SQLite manifest of instance states.
* :mod:`.batching` — instances into Dask tasks.
* :mod:`.worker` — the task: read, transcode, store, re-read, replace.
* :mod:`.runner` — the client: cluster, bounded submission, retries, recording.
* :mod:`.report` — progress bar, summary, JSON report.
* :mod:`.results` — states and reasons.
"""

from __future__ import annotations

from .batching import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_ITEMS, batches
from .manifest import Manifest, ManifestBusyError
from .orthanc_source import OrthancAccess
from .report import RunSummary
from .results import InstanceResult, State
from .runner import BulkSetupError, bulk_dir, local_client, transcode_sources
from .sources import Item, SourceError, parse_source, parse_sources
from .worker import WorkerConfig, process_batch

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_ITEMS",
    "BulkSetupError",
    "InstanceResult",
    "Item",
    "Manifest",
    "ManifestBusyError",
    "OrthancAccess",
    "RunSummary",
    "SourceError",
    "State",
    "WorkerConfig",
    "batches",
    "bulk_dir",
    "local_client",
    "parse_source",
    "parse_sources",
    "process_batch",
    "transcode_sources",
]
