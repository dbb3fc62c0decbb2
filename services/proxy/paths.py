"""Parsing a DICOMweb request URI into checked parts, or refusing it.

The guard builds ``X-Accel-Redirect`` only from what this module returns: UIDs
that match the DICOM UID grammar, fixed resource words, frame numbers and
re-encoded query parameters. Nothing of the raw URI is copied through, so no
traversal, encoding trick or header injection can reach nginx or Orthanc.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from neuronova_lib.uids import valid_uid
from neuronova_lib.wado import FRAME_REDUCE_LEVELS

from . import qido

PREFIX = "/api/pacs/dicom-web"

_FRAMES = re.compile(r"[1-9][0-9]{0,5}(,[1-9][0-9]{0,5}){0,999}")
_BULK_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_URI = 8192
#: Characters left literal in query values sent to Orthanc (QIDO wildcards, PN '^', lists).
QUERY_SAFE = ",*?^.-_:"
MAX_QUERY_ITEMS = 64


class Refusal(Exception):
    """The request is refused: ``status`` for the client, ``reason`` for the audit log."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass
class DicomWebTarget:
    """A checked DICOMweb request: its resource kind, UIDs and query.

    ``query`` holds what Orthanc will be sent (QIDO attributes as upper-case
    tags, see :mod:`.qido`); a QIDO study filter is kept apart in
    ``study_filter`` so that the scope check can replace it.
    """

    kind: str  # "qido" | "wado" | "metadata" | "frames" | "rendered" | "series_rendered" | "bulk"
    segments: list[str]
    study: str | None
    query: list[tuple[str, str]] = field(default_factory=list)
    token: str | None = None
    study_filter: tuple[str, ...] | None = None

    @property
    def query_studies(self) -> list[str]:
        """Study UIDs named by the QIDO study filter (keyword or tag form, lists split)."""
        return list(self.study_filter or ())

    def restrict_to(self, studies: tuple[str, ...]) -> None:
        """Make ``studies`` the QIDO study filter (the token's scope replaces the query's)."""
        self.study_filter = tuple(studies)

    @property
    def pixel_data(self) -> bool:
        """Retrieval, frames, rendered images: served by the NeuroNova WADO plugin when enabled."""
        return self.kind in ("wado", "frames", "rendered")

    def query_string(self) -> str:
        """The query as Orthanc gets it (never the token).

        Orthanc 1.10 does not percent-decode query values, so QIDO's wildcards and the
        PN component separator stay literal; anything else that is not a plain URI
        character is encoded (control characters were refused earlier).
        """
        pairs = self.query
        if self.study_filter:
            pairs = [*pairs, (qido.STUDY_TAG, ",".join(self.study_filter))]
        return "&".join(f"{quote(k, safe='')}={quote(v, safe=QUERY_SAFE)}" for k, v in pairs)

    def internal_uri(self, location: str, wado_plugin: bool = False) -> str:
        root = "/neuronova/dicom-web/" if wado_plugin and self.pixel_data else "/dicom-web/"
        path = location.rstrip("/") + root + "/".join(self.segments)
        if not self.query and not self.study_filter:
            return path
        if self.kind == "frames" and not wado_plugin:
            return path  # reduce: the NeuroNova plugin's; Orthanc's own answers whole frames
        return f"{path}?{self.query_string()}"


def _check_text(text: str, where: str) -> None:
    """Refuse traversal and control characters, however many times encoded."""
    seen = text
    for _ in range(4):
        if _CONTROL.search(seen):
            raise Refusal(400, "header_injection", f"control characters in the {where}")
        if ".." in seen.split("?")[0].split("/") or "\\" in seen:
            raise Refusal(400, "traversal", f"path traversal in the {where}")
        decoded = unquote(seen)
        if decoded == seen:
            return
        seen = decoded
    raise Refusal(400, "encoding", f"the {where} is encoded too many times")


def check_uid(value: str, what: str) -> str:
    if not valid_uid(value):
        raise Refusal(400, "bad_uid", f"{what} {value[:80]!r} is not a DICOM UID")
    return value


def _parse_segments(path: str) -> tuple[str, list[str], str | None]:
    if not path.startswith(PREFIX + "/"):
        raise Refusal(404, "unknown_route", "not a DICOMweb path")
    rest = path[len(PREFIX) + 1 :]
    if "%" in rest:
        raise Refusal(400, "encoded_path", "DICOMweb paths need no percent-encoding")
    segs = rest.split("/")
    if any(s in ("", ".") for s in segs):
        raise Refusal(400, "traversal", "empty or '.' path segment")
    n = len(segs)
    head = segs[0]
    if head in ("series", "instances") and n == 1:
        return "qido", segs, None
    if head != "studies":
        raise Refusal(404, "unknown_route", f"no DICOMweb resource {head!r}")
    if n == 1:
        return "qido", segs, None
    study = check_uid(segs[1], "StudyInstanceUID")
    if n == 2:
        return "wado", segs, study
    tail = segs[2:]
    if tail == ["metadata"]:
        return "metadata", segs, study
    if tail in (["series"], ["instances"]):
        return "qido", segs, study
    if tail[0] != "series":
        raise Refusal(404, "unknown_route", f"no study resource {tail[0]!r}")
    check_uid(tail[1] if len(tail) > 1 else "", "SeriesInstanceUID")
    tail = tail[2:]
    if not tail:
        return "wado", segs, study
    if tail == ["metadata"]:
        return "metadata", segs, study
    if tail == ["rendered"]:
        return "series_rendered", segs, study
    if tail == ["instances"]:
        return "qido", segs, study
    if tail[0] != "instances" or len(tail) < 2:
        raise Refusal(404, "unknown_route", f"no series resource {tail[0]!r}")
    check_uid(tail[1], "SOPInstanceUID")
    tail = tail[2:]
    if not tail:
        return "wado", segs, study
    if tail in (["metadata"], ["rendered"], ["thumbnail"]):
        return ("rendered" if tail[0] == "thumbnail" else tail[0]), segs, study
    if tail[0] == "frames" and len(tail) in (2, 3):
        if not _FRAMES.fullmatch(tail[1]):
            raise Refusal(400, "bad_frames", "frame list must be numbers from 1, comma-separated")
        numbers = tail[1].split(",")
        if len(set(numbers)) != len(numbers):  # one frame asked many times: work for nothing
            raise Refusal(400, "repeated_frames", "the frame list names a frame more than once")
        if len(tail) == 3 and tail[2] != "rendered":
            raise Refusal(404, "unknown_route", f"no frame resource {tail[2]!r}")
        return ("rendered" if len(tail) == 3 else "frames"), segs, study
    if tail[0] == "bulk" and 2 <= len(tail) <= 9 and all(_BULK_TAG.fullmatch(t) or t.isdigit() for t in tail[1:]):
        return "bulk", segs, study
    raise Refusal(404, "unknown_route", f"no instance resource {tail[0]!r}")


def _parse_query(raw: str, kind: str) -> tuple[list[tuple[str, str]], str | None]:
    """Decode the query once, take the token out, and keep only what ``kind`` takes."""
    items: list[tuple[str, str]] = []
    token: str | None = None
    if not raw:
        return items, token
    parts = raw.split("&")
    if len(parts) > MAX_QUERY_ITEMS:
        raise Refusal(400, "query_too_long", f"more than {MAX_QUERY_ITEMS} query parameters")
    for part in parts:
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = unquote(key.replace("+", " "))
        value = unquote(value.replace("+", " "))
        _check_text(value, "query")
        if _CONTROL.search(key):
            raise Refusal(400, "header_injection", "control characters in the query")
        if key == "token":
            if token is not None:
                raise Refusal(400, "duplicate_token", "more than one token in the query")
            token = value
            continue
        items.append((key, value))
    if items and kind in ("rendered", "series_rendered"):
        try:
            qido.check_rendered(items)
        except qido.QueryError as exc:
            raise Refusal(400, exc.reason, exc.detail) from None
    elif items and kind == "frames":
        if len(items) != 1 or items[0][0] != "reduce" or items[0][1] not in FRAME_REDUCE_LEVELS:
            raise Refusal(400, "bad_reduce",
                          "frames take one query parameter: reduce=1 to 5 (resolution levels "
                          "to drop; the platform's reduced frames), and a signed URL's token")
    elif items and kind != "qido":
        raise Refusal(400, "query_not_allowed",
                      f"query key {items[0][0][:80]!r}: this resource takes no query parameters "
                      "(only a signed URL's token)")
    return items, token


def parse(raw_path: str, raw_query: str) -> DicomWebTarget:
    """Check a DICOMweb URI as the client sent it (undecoded) and split it."""
    if len(raw_path) + len(raw_query) > MAX_URI:
        raise Refusal(414, "uri_too_long", "request URI too long")
    _check_text(raw_path, "path")
    kind, segments, study = _parse_segments(raw_path)
    items, token = _parse_query(raw_query, kind)
    target = DicomWebTarget(kind=kind, segments=segments, study=study, query=items, token=token)
    if items and kind == "qido":
        try:
            checked = qido.canonical(items)
        except qido.QueryError as exc:
            raise Refusal(400, exc.reason, exc.detail) from None
        target.query, target.study_filter = checked.pairs, checked.studies
        for uid in checked.studies or ():
            check_uid(uid, "StudyInstanceUID filter")
    return target
