"""C-STORE response statuses (PS3.4 Annex B.2.3, PS3.7 §9.1.1.1.9) for ingest outcomes.

The gate's reason decides the family, through the same table STOW-RS uses
(:func:`neuronova_lib.ingest.stow.failure_reason`), so a reason means the same
failure on both ways in. Codes STOW-RS may send but a C-STORE response may not
(PS3.4 GG's processing failure and duplicate SOP instance) are translated:

* ``0xA700`` *Refused: Out of Resources*: Orthanc unavailable (the modality
  should send again later) and the size caps, as for STOW-RS;
* ``0xA900`` *Data Set does not match SOP Class*: an inconsistent data set,
  and a SOP Instance UID the archive holds as another instance;
* ``0xC000`` *Cannot understand*: unparseable or hostile structure, and a file
  the checker or Orthanc could not process; ``0xC122`` an unknown transfer syntax;
* ``0x0122`` *Refused: SOP Class not supported*, ``0x0124`` *Refused: Not
  authorized* (a caller that is not a known modality, such as the health probe).

The gate's own reason code goes in ErrorComment (0000,0902).
"""

from __future__ import annotations

from neuronova_lib.ingest.stow import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    DUPLICATE_SOP_INSTANCE,
    PROCESSING_FAILURE,
    failure_reason,
)

SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122
NOT_AUTHORIZED = 0x0124

#: STOW-RS failure reasons that are not C-STORE statuses, and what C-STORE answers instead.
_NOT_CSTORE = {
    PROCESSING_FAILURE: CANNOT_UNDERSTAND,
    DUPLICATE_SOP_INSTANCE: DOES_NOT_MATCH_SOP_CLASS,
}

#: ErrorComment is an LO: at most 64 characters, no backslash, no control characters.
_COMMENT_LENGTH = 64


def store_status(stored: bool, reason: str | None) -> int:
    """The C-STORE status for an instance stored (``0x0000``) or refused for ``reason``."""
    if stored:
        return SUCCESS
    code = failure_reason(reason)
    return _NOT_CSTORE.get(code, code)


def error_comment(reason: str | None, message: str) -> str:
    """ErrorComment text: the reason code first, then as much of the message as fits."""
    text = f"{reason}: {message}" if reason else message
    clean = "".join(c if 0x20 <= ord(c) < 0x7F and c != "\\" else " " for c in text)
    return clean[:_COMMENT_LENGTH].rstrip()
