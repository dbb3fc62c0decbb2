"""Is a second file with a stored SOP Instance UID the same instance, or a conflict?

Orthanc keeps the first copy of a SOP Instance UID (``OverwriteInstances`` is
off), so a second, different file with the same UID would be silently lost.
The gate asks this module instead: the same bytes, or the same instance in
another transfer syntax (the platform stores HTJ2K copies of what it is
sent), is a duplicate and harmless; anything else is a conflict, refused and
quarantined.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

#: Elements a transcoder may legitimately change: the pixel data and its offset tables.
_ENCODING_TAGS = frozenset({0x7FE00010, 0x7FE00001, 0x7FE00002})


def _attributes(ds: Any) -> dict[int, Any]:
    """Every element outside the file meta and the pixel encoding, as comparable values."""
    return {int(elem.tag): (elem.VR, elem.value) for elem in ds
            if int(elem.tag) not in _ENCODING_TAGS}


def same_instance(stored: bytes, sent: bytes) -> bool:
    """Whether ``sent`` holds exactly what ``stored`` holds, whatever the transfer syntax.

    Equal bytes are the same instance. Otherwise both are parsed: every
    attribute but Pixel Data and its offset tables must be equal, and the
    decoded pixels must be equal, value for value. Anything unreadable is not
    the same (the caller refuses it as a conflict).
    """
    if stored == sent:
        return True
    import pydicom

    from neuronova_lib import htj2k

    htj2k.register()  # an HTJ2K copy's pixels decode through the platform's codec

    try:
        a = pydicom.dcmread(io.BytesIO(stored))
        b = pydicom.dcmread(io.BytesIO(sent))
        if _attributes(a) != _attributes(b):
            return False
        has_a, has_b = "PixelData" in a, "PixelData" in b
        if has_a != has_b:
            return False
        return not has_a or bool(np.array_equal(a.pixel_array, b.pixel_array))
    except Exception:  # noqa: BLE001 - unreadable means "not shown to be the same"
        return False
