"""What one instance of a bulk run came to: its state, the reason, the bytes.

Workers return these as plain dicts (cheap to pickle, no class needed on the
other side); the client writes them into the manifest. The reasons extend
:class:`neuronova_lib.transcode.Reason` with what can go wrong around the
transcoder: reading, storing, re-reading, replacing in Orthanc, and losing a
worker. A file the ingest gate refuses carries the gate's own reason code
(:data:`neuronova_lib.ingest.REASONS`, e.g. ``nesting_too_deep``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from neuronova_lib.transcode import Reason


class State(StrEnum):
    """An instance's state in the manifest.

    ``pending`` — listed, not finished (a re-run processes it);
    ``done`` — stored in Orthanc as HTJ2K and re-read byte-identical;
    ``skipped`` — nothing to transcode (already HTJ2K, or no pixel data);
    ``failed`` — reported with a reason; a re-run tries it again.
    """

    PENDING = "pending"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class BulkReason(StrEnum):
    """Reasons a bulk run adds to :class:`~neuronova_lib.transcode.Reason` and the gate's."""

    NOT_DICOM = "not_dicom"
    READ_FAILED = "read_failed"
    GATE_UNAVAILABLE = "gate_unavailable"
    STORE_FAILED = "store_failed"
    REREAD_MISMATCH = "reread_mismatch"
    SOP_INSTANCE_CONFLICT = "sop_instance_conflict"
    ORTHANC_INSTANCE_MISSING = "orthanc_instance_missing"
    BACKUP_FAILED = "backup_failed"
    BACKUP_CONFLICT = "backup_conflict"
    WORKER_LOST = "worker_lost"
    ERROR = "error"


#: Outcomes that mean "not an image to transcode" rather than "an image that went wrong":
#: a file that is not DICOM at all (a README, a NIfTI beside the series), an image
#: already in HTJ2K, an object without pixels (SR, RT plan). Reported, not failed.
SKIP_REASONS = frozenset({
    Reason.ALREADY_HTJ2K.value, Reason.NO_PIXEL_DATA.value, BulkReason.NOT_DICOM.value,
})


@dataclass
class InstanceResult:
    """The outcome of one instance, as a worker reports it.

    Attributes
    ----------
    key : str
        The manifest key of the instance (see :mod:`.sources`).
    state : State
        ``done``, ``skipped`` or ``failed`` (a worker never reports ``pending``).
    reason : str or None
        A :class:`~neuronova_lib.transcode.Reason` or :class:`BulkReason` value.
    message : str or None
        What happened, for people; says what to do where something can be done.
    bytes_in, bytes_out : int
        Size of the original file and of the stored HTJ2K file (0 if none).
    sha256 : str or None
        Digest of the file stored in Orthanc (as re-read), for audits.
    sop_instance_uid, orthanc_id : str or None
        The instance's identity, once known.
    seconds : float
        Wall time on the worker.
    worker : str
        ``host:pid`` of the process that did the work.
    backup : str or None
        Where the original of an Orthanc instance is kept, when a failure left
        it there (never set for ``done``).
    quarantine_sha256 : str or None
        The quarantine entry of a refused file (gate refusal or SOP Instance
        UID conflict): :meth:`neuronova_lib.ingest.Quarantine.get` finds it.
    """

    key: str
    state: State
    reason: str | None = None
    message: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    sha256: str | None = None
    sop_instance_uid: str | None = None
    orthanc_id: str | None = None
    seconds: float = 0.0
    worker: str = ""
    backup: str | None = None
    quarantine_sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain types only, for pickling to the client and for JSON."""
        out = asdict(self)
        out["state"] = self.state.value
        out["reason"] = str(self.reason) if self.reason is not None else None
        return out
