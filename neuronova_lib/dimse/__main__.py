"""``python -m neuronova_lib.dimse``: run the DICOM listener until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import sys
import threading


def main() -> int:
    from neuronova_lib.config import get_settings

    from .listener import serve

    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pynetdicom logs every PDU at INFO; the listener logs one line per decision itself.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    settings = get_settings()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve(settings, stop)
    return 0


if __name__ == "__main__":  # the gate's workers are spawned: they re-import this module
    sys.exit(main())
