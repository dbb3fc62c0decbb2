"""The platform's DICOM listener: C-STORE from known modalities, through the ingest gate.

Orthanc's own DICOM listener stays off: DCMTK parses what it receives before
any filter runs, and a small file with deeply nested sequences kills the whole
Orthanc process (FINDINGS). So modalities store here instead, and each
instance takes the way STOW-RS takes:

1. **Association** (``EVT_REQUESTED``): the calling AE title must be a known
   modality (``NEURONOVA_DICOM_MODALITIES``) calling from its own host, and the
   called AE title ``NEURONOVA_DICOM_AET``; anything else is rejected
   (A-ASSOCIATE-RJ, permanent, "calling/called AE title not recognised") and
   audited. The supervisor's health probe may open an association for C-ECHO
   from loopback only.
2. **Presentation contexts**: the storage SOP classes the gate accepts, each
   with the classic transfer syntaxes and HTJ2K (the platform stores over
   HTTP, so Orthanc's own refusal of HTJ2K over DIMSE does not apply); plus
   Verification (C-ECHO).
3. **C-STORE** (``EVT_C_STORE``): the data set is taken *as encoded* by the
   modality (pynetdicom never decodes it here) and, framed as a Part 10 file,
   handed to :meth:`~neuronova_lib.ingest.store.Ingestor.ingest` with
   ``route="dicom"`` and the calling AE title as sender: the sandboxed gate
   checks it, a refusal is quarantined, an accepted file is stored in Orthanc.
   The answer's status is chosen in :mod:`.status`; the gate's reason goes in
   ErrorComment.
4. **Audit**: one record per C-STORE and per rejected association, service
   ``dicom``, the calling AE title as the user, the peer address as the client
   (repeated refusals are folded as the writer does for every service).

Nothing a modality sends is parsed in this process; a handler that fails
answers ``0xC000`` and the listener carries on.

Run it as ``python -m neuronova_lib.dimse`` (``neuronova up`` does, when
``NEURONOVA_DICOM_ENABLED`` is set).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    HTJ2K,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from neuronova_lib.db.audit import AuditWriter
from neuronova_lib.ingest.checks import Limits, valid_uid
from neuronova_lib.ingest.store import Ingestor

from .modalities import Admission, KnownModalities
from .status import NOT_AUTHORIZED, SUCCESS, error_comment, store_status

log = logging.getLogger(__name__)

SERVICE = "dicom"

#: What a modality may send: the uncompressed syntaxes, the classic compressed ones the
#: gate can decode, and HTJ2K.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless,
    JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000,
    RLELossless, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K,
)

#: A-ASSOCIATE-RJ (result, source, diagnostic): permanent, service user, calling/called AET.
_REJECT_CALLING = (0x01, 0x01, 0x03)
_REJECT_CALLED = (0x01, 0x01, 0x07)


def _uid_or_none(value: Any) -> str | None:
    text = str(value or "").strip("\x00 ")
    return text if valid_uid(text) else None


class Listener:
    """A storage SCP bound to one data dir's gate, Orthanc and audit log.

    Parameters
    ----------
    settings : Settings
        ``NEURONOVA_DICOM_*`` (address, port, AE title, modalities) and the gate's
        SOP class allow-list.
    ingestor : Ingestor
        Gate, quarantine and Orthanc, shared by every association (thread-safe).
    audit : AuditWriter
        Where each decision is recorded before it is answered.
    modalities : KnownModalities, optional
        Default: built from ``settings.dicom_modalities``.
    """

    def __init__(self, settings: Any, ingestor: Ingestor, audit: AuditWriter,
                 modalities: KnownModalities | None = None) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.audit = audit
        self.modalities = modalities or KnownModalities(settings.dicom_modalities)
        self.ae = self._application_entity()
        self._server: Any = None

    # ---------------------------------------------------------------- set-up
    def _application_entity(self) -> AE:
        ae = AE(ae_title=self.settings.dicom_aet)
        # Checked (and audited) in _on_requested; pynetdicom's own check stays as a backstop.
        ae.require_called_aet = True
        ae.add_supported_context(Verification)
        for sop_class in sorted(Limits.from_settings(self.settings).sop_classes):
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        return ae

    def handlers(self) -> list[tuple[Any, Any]]:
        return [(evt.EVT_REQUESTED, self._on_requested),
                (evt.EVT_C_ECHO, self._on_echo),
                (evt.EVT_C_STORE, self._on_store)]

    def start(self) -> None:
        """Listen (in background threads) until :meth:`stop`."""
        address = (self.settings.dicom_host, int(self.settings.dicom_port))
        self._server = self.ae.start_server(address, block=False, evt_handlers=self.handlers())
        log.info("DICOM listener %s on %s:%d, %d known modalities", self.settings.dicom_aet,
                 *address, len(self.settings.dicom_modalities))

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # ---------------------------------------------------------------- events
    def _record(self, **fields: Any) -> None:
        self.audit.record_sync(service=SERVICE, role="modality", **fields)

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        address = str(assoc.requestor.address)
        admission = self.modalities.admit(calling, address)
        reject, reason = None, admission.reason
        if called != self.settings.dicom_aet:
            reject, reason = _REJECT_CALLED, "called_aet"
        elif not admission.accepted:
            reject = _REJECT_CALLING
        if reject is None:
            assoc.neuronova_admission = admission  # read by _on_store
            return
        detail = (f"association from {calling!r} at {address} to {called!r} rejected: "
                  + {"called_aet": f"this listener is {self.settings.dicom_aet!r}",
                     "aet_wrong_host": "this AE title is known, but not from this host",
                     "unknown_aet": "not a known modality (NEURONOVA_DICOM_MODALITIES)"}[reason])
        log.warning("%s", detail)
        try:
            self._record(username=calling[:64] or None, method="A-ASSOCIATE", path=called[:64],
                         decision="deny", status=reject[2], reason=reason, detail=detail,
                         client=address[:64])
        finally:
            assoc.acse.send_reject(*reject)
            # As pynetdicom's own rejections do: let the DUL send the A-ASSOCIATE-RJ before
            # the association thread closes the socket (else the peer sees an abort).
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()

    def _on_echo(self, event: Any) -> int:
        return SUCCESS

    def _on_store(self, event: Any) -> Dataset:
        assoc = event.assoc
        admission: Admission | None = getattr(assoc, "neuronova_admission", None)
        calling = str(assoc.requestor.ae_title).strip()
        address = str(assoc.requestor.address)[:64]
        request = event.request
        sop_uid = _uid_or_none(getattr(request, "AffectedSOPInstanceUID", None))
        answer = Dataset()
        study: str | None = None
        if admission is None or not admission.may_store:
            status, reason = NOT_AUTHORIZED, "not_a_modality"
            message = "this AE title may echo but not store"
        else:
            try:
                outcome = self.ingestor.ingest(event.encoded_dataset(), sender=calling,
                                               route=SERVICE)
            except Exception as exc:  # never take the listener down over one instance
                log.exception("C-STORE from %s failed", calling)
                status, reason, message = store_status(False, None), "listener_error", str(exc)
            else:
                status, reason = store_status(outcome.stored, outcome.reason), outcome.reason
                message, study = outcome.message, outcome.study_uid
                sop_uid = outcome.sop_instance_uid or sop_uid
        if status != SUCCESS:
            answer.ErrorComment = error_comment(reason, message)
        log.info("C-STORE %s from %s@%s: 0x%04X %s", sop_uid, calling, address, status,
                 reason or message)
        self._record(username=calling[:64] or None, method="C-STORE", path=sop_uid or "?",
                     study=study, decision="allow" if status == SUCCESS else "deny",
                     status=status, reason=reason or "stored", detail=message[:4000],
                     client=address)
        answer.Status = status
        return answer


def serve(settings: Any, stop: threading.Event) -> None:
    """Run a listener with its own gate and audit writer until ``stop`` is set."""
    from neuronova_lib.db.engine import get_engine
    from neuronova_lib.ingest import Gate

    with Gate(settings) as gate:
        audit = AuditWriter.from_settings(get_engine(settings.sqlalchemy_url), settings)
        listener = Listener(settings, Ingestor(settings, gate), audit)
        listener.start()
        try:
            stop.wait()
        finally:
            listener.stop()
