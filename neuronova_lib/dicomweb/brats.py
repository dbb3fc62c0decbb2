"""BraTS channel rules: which series of a study is T1, T1c, T2 or FLAIR.

A naming convention, not transport: kept apart from :mod:`.client` so that
the rules can be read, tested and changed on their own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .results import SeriesSummary

#: The four BraTS channels, in the order of :meth:`Client.load_study`'s first axis.
BRATS_CHANNELS: tuple[str, ...] = ("t1", "t1c", "t2", "flair")

_CONTRAST_WORDS = {"post", "contrast", "postcontrast", "gd", "gad", "gado", "gadolinium",
                   "ce", "c", "t1c", "t1ce", "t1gd", "t1post", "enhanced"}


def classify_brats_series(description: str) -> str | None:
    """BraTS channel of a series from its SeriesDescription, or ``None``.

    Rules, in order (case-insensitive, on words): ``flair`` → ``flair``;
    ``t1`` (or MPRAGE/SPGR) with a contrast word (post, contrast, gd, gad,
    ce, c, …) → ``t1c``; ``t1``/MPRAGE/SPGR → ``t1``; ``t2`` → ``t2``. The
    demo data's descriptions: "T1 MPRAGE 3D", "T1 MPRAGE 3D post-contrast",
    "T2 TSE 3D", "T2 FLAIR 3D".
    """
    text = description.lower()
    words = set(re.split(r"[^a-z0-9+]+", text)) - {""}
    if "flair" in words or "flair" in text:
        return "flair"
    t1 = bool(words & {"t1", "t1w", "mprage", "spgr", "t1c", "t1ce", "t1gd", "t1post"}) \
        or text.startswith("t1")
    if t1 and (words & _CONTRAST_WORDS or "+c" in text or "post" in text):
        return "t1c"
    if t1:
        return "t1"
    if words & {"t2", "t2w"} or text.startswith("t2"):
        return "t2"
    return None


def match_brats_series(series: Sequence[SeriesSummary]) -> dict[str, SeriesSummary]:
    """Channel → series for the series :func:`classify_brats_series` recognises.

    Raises
    ------
    LookupError
        When two series claim one channel (pass ``series=`` to choose).
    """
    found: dict[str, SeriesSummary] = {}
    for item in series:
        channel = classify_brats_series(item.description)
        if channel is None:
            continue
        if channel in found:
            raise LookupError(
                f"two series look like {channel}: {found[channel].description!r} "
                f"({found[channel].series_uid}) and {item.description!r} ({item.series_uid}); "
                f"pass series={{'{channel}': <SeriesInstanceUID>, ...}} to choose"
            )
        found[channel] = item
    return found


__all__ = ["BRATS_CHANNELS", "classify_brats_series", "match_brats_series"]
