"""UID arguments of the client's public functions, typed: a ``str`` that is a DICOM UID.

A UID that arrives as an ``int`` (a spreadsheet column), ``bytes`` (a raw
element value) or ``None`` (a missing attribute) would otherwise turn into a
URL such as ``/studies/None`` and a confusing 400 from the server. So every
function that takes a UID checks it here first: anything but a ``str`` (or a
record that carries the UID, :class:`~.results.StudySummary` and
:class:`~.results.SeriesSummary`) is a :class:`TypeError`; a ``str`` that is
not a UID is a :class:`ValueError`. pydicom's ``UID`` is a ``str`` and is
accepted as it is.
"""

from __future__ import annotations

from ..uids import MAX_UID_LENGTH, valid_uid
from .results import SeriesSummary, StudySummary


def is_uid(text: str) -> bool:
    """Whether ``text`` is a DICOM UID (PS3.5 §9.1, the platform's one rule: :mod:`..uids`)."""
    return valid_uid(text)


def require_uid(value: object, what: str) -> str:
    """``value`` as a ``str`` if it is a DICOM UID; ``TypeError`` for a non-``str``, else ``ValueError``."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str holding a DICOM UID (such as '1.2.840.10008.1.2'), "
                        f"not {type(value).__name__}: {value!r:.80}")
    if not is_uid(value):
        raise ValueError(f"{what} {value[:80]!r} is not a DICOM UID (digits in dot-separated "
                         f"components without leading zeros, at most {MAX_UID_LENGTH} characters)")
    return str(value)


def study_uid_of(value: str | StudySummary | SeriesSummary) -> str:
    """The StudyInstanceUID given as a ``str`` or carried by a study or series record."""
    if isinstance(value, (StudySummary, SeriesSummary)):
        value = value.study_uid
    return require_uid(value, "StudyInstanceUID")


def series_uid_of(value: str | SeriesSummary) -> str:
    """The SeriesInstanceUID given as a ``str`` or carried by a series record."""
    if isinstance(value, SeriesSummary):
        value = value.series_uid
    return require_uid(value, "SeriesInstanceUID")


__all__ = ["is_uid", "require_uid", "series_uid_of", "study_uid_of"]
