"""What one instance of a bulk run came to: its state, the reason, the bytes.

Workers return these as plain dicts (cheap to pickle, no class needed on the
other side); the client writes them into the manifest. Every reason is a
:class:`neuronova_lib.reasons.Reason`: the transcoder's, the ingest gate's and
store step's (a refused file carries the gate's own code, e.g.
``nesting_too_deep``), and what can go wrong around them in a bulk run
(reading, re-reading, replacing in Orthanc, losing a worker).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any



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
        A :class:`~neuronova_lib.reasons.Reason` value.
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
