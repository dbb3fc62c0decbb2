"""QIDO-RS query keys, read exactly as PS3.18 spells them and sent on as tags.

Orthanc 1.10's DICOMweb plugin reads a query key as an attribute tag or as a
DCMTK keyword (case-sensitive) and silently drops any key it cannot parse:
no filter, everything matches. A guard that reads keys one way while Orthanc
reads them another lets a query talk its way around a study scope. So the guard
reads a key only one way, PS3.18's (§8.3.4): a DICOM keyword in its exact
case (pydicom's data dictionary), an 8-digit hex tag, or one of the
lower-case parameters ``includefield``, ``limit``, ``offset`` and
``fuzzymatching``; anything else is refused. It then forwards every attribute
as its upper-case 8-digit tag, which Orthanc parses as a number: no dictionary
of Orthanc's is ever consulted, so the two cannot disagree. Each attribute is
given once (Orthanc keeps the last of repeated keys); ``includefield`` may be
repeated (dicomweb-client does) and is merged. Dotted sequence paths are
refused: Orthanc 1.10 ignores them.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

STUDY_TAG = "0020000D"
#: PS3.18 Table 8.3.4-1's query parameters other than attributes, spelled as there.
PARAMETERS = frozenset({"includefield", "limit", "offset", "fuzzymatching"})
#: The rendered resources' query parameters the WADO plugin reads (PS3.18 §8.3.5).
RENDERED_PARAMETERS = frozenset({"window", "viewport", "quality"})
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_NUMBER = re.compile(r"[0-9]{1,9}")


class QueryError(ValueError):
    """A query the guard refuses (HTTP 400): ``reason`` for the audit log, message for the user."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _load_keywords() -> dict[str, str]:
    """{keyword: "GGGGEEEE"} from pydicom's data dictionary.

    The dictionary module is a plain literal; loading it alone takes ~6 ms,
    importing the pydicom package ~0.5 s of every guard (re)start.
    """
    spec = importlib.util.find_spec("pydicom")
    origin = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None
    table = None
    if origin is not None:
        entry = importlib.util.spec_from_file_location("_neuronova_dicom_dict",
                                                       f"{origin}/_dicom_dict.py")
        if entry is not None and entry.loader is not None:
            module = importlib.util.module_from_spec(entry)
            entry.loader.exec_module(module)
            table = module.DicomDictionary
    if table is None:  # pragma: no cover - a pydicom without the module file
        from pydicom.datadict import DicomDictionary as table
    return {row[4]: f"{tag:08X}" for tag, row in table.items() if row[4]}


KEYWORD_TAGS: dict[str, str] = _load_keywords()


def attribute_tag(key: str) -> str:
    """The upper-case 8-digit tag a QIDO attribute key names, or :class:`QueryError`."""
    tag = KEYWORD_TAGS.get(key)
    if tag is not None:
        return tag
    if len(key) == 8 and _TAG.fullmatch(key):
        return key.upper()
    if "." in key:
        raise QueryError("unsupported_query_key",
                         f"{key[:80]!r}: sequence matching (dotted keys) is not supported here; "
                         "filter on a top-level attribute")
    raise QueryError("unknown_query_key", _unknown(key))


def _unknown(key: str) -> str:
    """A message that names the key and the spelling that would work."""
    shown = repr(key[:80])
    if key.strip() != key:
        return f"query key {shown} has spaces around it; send the key alone"
    if key.lower() in PARAMETERS:
        return f"query key {shown}: PS3.18 spells it {key.lower()!r} (lower case)"
    lowered = key.lower()
    for keyword, tag in KEYWORD_TAGS.items():  # only on this refusal path
        if keyword.lower() == lowered:
            return (f"query key {shown}: DICOM keywords are case-sensitive; "
                    f"use {keyword!r} or the tag {tag!r}")
    return (f"query key {shown} is not a DICOM keyword (exact case, e.g. 'StudyInstanceUID'), "
            "an 8-digit tag (e.g. '0020000D') or one of includefield, limit, offset, fuzzymatching")


@dataclass
class QidoQuery:
    """A checked QIDO query: attribute filters by tag, parameters, and the study filter apart."""

    pairs: list[tuple[str, str]]
    studies: tuple[str, ...] | None  # the StudyInstanceUID filter's UIDs; None: no filter


def canonical(items: list[tuple[str, str]]) -> QidoQuery:
    """Check decoded ``(key, value)`` pairs and rewrite them as Orthanc will read them."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    include: list[str] = []
    studies: tuple[str, ...] | None = None
    for key, value in items:
        if key == "includefield":
            include.extend(_include_fields(value))
            continue
        name = key if key in PARAMETERS else attribute_tag(key)
        if name in seen:
            raise QueryError("ambiguous_query",
                             f"{key[:80]!r} repeats an attribute or parameter already given; "
                             "send each once (a list of values is comma-separated)")
        seen.add(name)
        if name in ("limit", "offset"):
            if not _NUMBER.fullmatch(value):
                raise QueryError("bad_query_value", f"{name} must be a whole number, not {value[:40]!r}")
        elif name == "fuzzymatching":
            if value not in ("true", "false"):
                raise QueryError("bad_query_value", f"fuzzymatching is 'true' or 'false', not {value[:40]!r}")
        elif name == STUDY_TAG:
            uids = tuple(v for v in value.split(",") if v)
            studies = uids or None  # an empty value is universal matching: no filter
            continue
        pairs.append((name, value))
    if include:
        fields = ["all"] if "all" in include else list(dict.fromkeys(include))
        pairs.append(("includefield", ",".join(fields)))
    return QidoQuery(pairs, studies)


def _include_fields(value: str) -> list[str]:
    fields: list[str] = []
    for item in value.split(","):
        if item == "all":
            fields.append(item)
            continue
        try:
            fields.append(attribute_tag(item))
        except QueryError as exc:
            raise QueryError("bad_query_value", f"includefield: {exc.detail}") from None
    return fields


def check_rendered(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Rendered resources take ``window``, ``viewport`` and ``quality``, each once."""
    seen: set[str] = set()
    for key, _ in items:
        if key not in RENDERED_PARAMETERS:
            raise QueryError("query_not_allowed",
                             f"query key {key[:80]!r}: rendered images take window, viewport, quality")
        if key in seen:
            raise QueryError("ambiguous_query", f"{key!r} given more than once")
        seen.add(key)
    return items
