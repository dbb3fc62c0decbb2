"""The health probe: a C-ECHO to the listener, as the supervisor and ``neuronova status`` send it."""

from __future__ import annotations

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from .modalities import PROBE_AET


def echo(host: str, port: int, called_aet: str, timeout: float = 2.0) -> bool:
    """Whether the listener at ``host:port`` answers C-ECHO with Success.

    The probe calls as :data:`~.modalities.PROBE_AET`, which the listener admits
    from loopback only and never for C-STORE.
    """
    ae = AE(ae_title=PROBE_AET)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == 0
    finally:
        assoc.release()
