"""Search on the facade: the values each resource is found by, and the request's parameters.

Each resource's current version is indexed as rows ``(param, system, value)``
(:class:`~neuronova_lib.db.models.FhirSearchToken`), rebuilt on every write. Strings are
kept lower-case so that ``name`` and ``family`` match as FHIR says (case-insensitive,
starts-with by default, ``:exact`` and ``:contains`` modifiers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .outcome import FhirError

#: The search parameters each type supports (besides ``_id``), and their kind.
PARAMETERS: dict[str, dict[str, str]] = {
    "Patient": {"identifier": "token", "name": "string", "family": "string",
                "given": "string", "birthdate": "date", "gender": "token"},
    "ImagingStudy": {"identifier": "token", "subject": "reference", "patient": "reference",
                     "status": "token"},
    "Observation": {"identifier": "token", "subject": "reference", "patient": "reference",
                    "status": "token", "code": "token", "part-of": "reference"},
}
#: Result parameters the facade understands; other ``_`` parameters are ignored, as FHIR
#: allows (``_format``, ``_pretty``, ``_summary``, ...).
RESULT_PARAMETERS = frozenset({"_count", "_offset", "_id"})
_DATE_PREFIX = re.compile(r"^(eq|ne|gt|lt|ge|le)?(\d{4}(-\d{2}(-\d{2})?)?)$")


def _identifiers(resource: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [("identifier", i.get("system"), str(i["value"]))
            for i in resource.get("identifier", []) if i.get("value")]


def _reference(resource: dict[str, Any], element: str, params: tuple[str, ...]
               ) -> list[tuple[str, str | None, str]]:
    ref = (resource.get(element) or {}).get("reference")
    rows: list[tuple[str, str | None, str]] = []
    if ref:
        for param in params:
            if param != "patient" or ref.startswith("Patient/"):
                rows.append((param, None, ref))
    return rows


def index_values(resource: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    """The ``(param, system, value)`` rows a resource is found by."""
    rtype = resource["resourceType"]
    rows = _identifiers(resource)
    if rtype == "Patient":
        for name in resource.get("name", []):
            parts = [("family", name["family"])] if name.get("family") else []
            parts += [("given", given) for given in name.get("given", [])]
            parts += [("name", name["text"])] if name.get("text") else []
            for param, text in parts:
                # Lower-case for the default and :contains matches; as written for :exact.
                for key in {param, "name"}:
                    rows += [(key, None, text.lower()), (f"{key}:exact", None, text)]
        if resource.get("birthDate"):
            rows.append(("birthdate", None, resource["birthDate"]))
        if resource.get("gender"):
            rows.append(("gender", None, resource["gender"]))
    elif rtype in ("ImagingStudy", "Observation"):
        rows += _reference(resource, "subject", ("subject", "patient"))
        if resource.get("status"):
            rows.append(("status", None, resource["status"]))
        if rtype == "Observation":
            for coding in (resource.get("code") or {}).get("coding", []):
                if coding.get("code"):
                    rows.append(("code", coding.get("system"), coding["code"]))
            for part in resource.get("partOf", []):
                if part.get("reference"):
                    rows.append(("part-of", None, part["reference"]))
            for based in resource.get("derivedFrom", []):
                if based.get("reference"):
                    rows.append(("part-of", None, based["reference"]))
    return [(p, s, v[:255]) for p, s, v in rows]


@dataclass(frozen=True)
class Criterion:
    """One condition of a search: ``param`` matched by ``mode`` against ``value``.

    ``mode``: ``exact`` (tokens, references, ``:exact``), ``prefix`` (strings by default,
    partial dates), ``contains``, or a date comparison ``gt``/``lt``/``ge``/``le``/``ne``.
    ``system``: for tokens given as ``system|value`` (``""``: no system; ``None``: any).
    """

    param: str
    mode: str
    value: str
    system: str | None = None


def parse_criteria(resource_type: str, query: list[tuple[str, str]]) -> list[Criterion]:
    """The search conditions of a query string (all must hold), or a 400 naming what is wrong."""
    supported = PARAMETERS[resource_type]
    criteria: list[Criterion] = []
    for key, raw in query:
        name, _, modifier = key.partition(":")
        if name.startswith("_"):
            continue
        kind = supported.get(name)
        if kind is None:
            raise FhirError(400, "not-supported",
                            f"{resource_type} has no search parameter {name!r} here; supported: "
                            f"_id, {', '.join(sorted(supported))}")
        if "," in raw:
            raise FhirError(400, "not-supported",
                            f"{key}={raw}: OR lists (commas) are not supported; "
                            "search once per value")
        criteria.append(_criterion(resource_type, name, kind, modifier, raw))
    return criteria


def _criterion(resource_type: str, name: str, kind: str, modifier: str, value: str
               ) -> Criterion:
    if not value:
        raise FhirError(400, "invalid", f"{name}: empty value")
    if kind == "string":
        if modifier not in ("", "exact", "contains"):
            raise FhirError(400, "not-supported", f"{name}:{modifier}: use :exact or :contains")
        if modifier == "exact":
            return Criterion(f"{name}:exact", "exact", value)
        return Criterion(name, "contains" if modifier else "prefix", value.lower())
    if modifier:
        raise FhirError(400, "not-supported", f"{name}:{modifier}: no modifiers on {kind}s")
    if kind == "token":
        if "|" in value:
            system, _, code = value.partition("|")
            return Criterion(name, "exact", code, system)
        return Criterion(name, "exact", value.lower() if name == "gender" else value)
    if kind == "reference":
        ref = value if "/" in value else f"Patient/{value}"
        return Criterion(name, "exact", ref)
    match = _DATE_PREFIX.match(value)
    if not match:
        raise FhirError(400, "invalid",
                        f"{name}={value}: give a date YYYY[-MM[-DD]] with an optional prefix "
                        "eq, ne, gt, lt, ge, le")
    prefix, date = match.group(1) or "eq", match.group(2)
    if prefix == "eq":
        return Criterion(name, "prefix" if len(date) < 10 else "exact", date)
    return Criterion(name, prefix, date)
