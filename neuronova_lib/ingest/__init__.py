"""The ingest gate: check untrusted DICOM bytes in sandboxed workers, quarantine refusals.

Front doors::

    from neuronova_lib.ingest import Gate, Quarantine
    with Gate(settings) as gate:
        verdict = gate.check(data)            # Verdict(accepted, reason, message, ...)
    if not verdict.accepted:
        Quarantine(settings).put(data, verdict, sender="alice", route="stow")

Storing what the gate accepted is :mod:`.store` (:class:`~.store.Ingestor`, the
gate in front of :class:`~.store.IngestCore`, the one store step of every way
in).

Modules: :mod:`.checks` (pure checks), :mod:`.sandbox` (worker processes with
resource limits), :mod:`.quarantine` (refused files on disk), :mod:`.store`
(the ingest core), :mod:`.uniqueness` (one UID, one object; the UID locks),
:mod:`.conflict` (same instance or not), :mod:`.uid_audit` (UIDs an archive
holds twice), :mod:`.stow` (the STOW-RS answer). Reason codes:
:mod:`neuronova_lib.reasons`.
"""

from __future__ import annotations

from neuronova_lib.reasons import REASONS

from .checks import Accepted, Limits, Refusal, check_bytes
from .quarantine import Quarantine, QuarantineEntry
from .conflict import same_instance
from .sandbox import Gate, GateConfig, Verdict

__all__ = [
    "REASONS",
    "Accepted",
    "Gate",
    "GateConfig",
    "Limits",
    "Quarantine",
    "QuarantineEntry",
    "Refusal",
    "Verdict",
    "check_bytes",
    "same_instance",
]
