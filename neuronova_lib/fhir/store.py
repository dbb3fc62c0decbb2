"""Read, vread, create, update, conditional create and search of facade resources.

Every write stores a new version (``meta.versionId`` 1, 2, ...) in
``fhir_resource_versions`` beside the current one in ``fhir_resources`` and rebuilds the
resource's search rows, in one transaction. A conditional create on an identifier
(``If-None-Exist: identifier=system|value``) also inserts a row in
``fhir_identifier_claims`` in that transaction: of two concurrent creates of the same
patient (two API workers, the chain and a client) one commits and the other finds its
resource, so the identifier is held by one resource, never two.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db.models import FhirIdentifierClaim, FhirResource, FhirResourceVersion, FhirSearchToken
from .outcome import FhirError
from .search import Criterion, index_values, parse_criteria
from .validation import validate_resource

#: The resource types the facade serves.
SUPPORTED_TYPES = ("Patient", "ImagingStudy", "Observation")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _instant(when: datetime) -> str:
    if when.tzinfo is None:  # SQLite gives back naive datetimes
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_type(resource_type: str) -> None:
    """404 for a type the facade does not serve (names the ones it does)."""
    if resource_type not in SUPPORTED_TYPES:
        raise FhirError(404, "not-supported",
                        f"resource type {resource_type!r} is not served here; this server has "
                        f"{', '.join(SUPPORTED_TYPES)} (see /metadata)")


def etag(resource: dict[str, Any]) -> str:
    return f'W/"{resource["meta"]["versionId"]}"'


class FhirStore:
    """The facade's resources in the platform database, on one SQLAlchemy session.

    Writes commit; reads do not (the caller's audit record commits with its request).
    """

    def __init__(self, session: Session) -> None:
        self.session = session

    # -- reading -------------------------------------------------------------
    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """The current version, or 404."""
        check_type(resource_type)
        row = self.session.get(FhirResource, (resource_type, resource_id))
        if row is None:
            raise FhirError(404, "not-found", f"{resource_type}/{resource_id} does not exist")
        return dict(json.loads(row.resource))

    def vread(self, resource_type: str, resource_id: str, version: str) -> dict[str, Any]:
        """One version (``/_history/{vid}``), or 404."""
        check_type(resource_type)
        row = None
        if version.isdigit():
            row = self.session.get(FhirResourceVersion, (resource_type, resource_id, int(version)))
        if row is None:
            raise FhirError(404, "not-found",
                            f"{resource_type}/{resource_id} has no version {version!r}")
        return dict(json.loads(row.resource))

    def search(self, resource_type: str, query: list[tuple[str, str]], count: int,
               offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """``(total, one page of matches)``, oldest first (stable for paging)."""
        check_type(resource_type)
        criteria = parse_criteria(resource_type, query)
        ids = [v for k, v in query if k == "_id"]
        statement = select(FhirResource).where(FhirResource.resource_type == resource_type)
        for value in ids:
            statement = statement.where(FhirResource.id == value)
        for criterion in criteria:
            statement = statement.where(FhirResource.id.in_(self._matching(resource_type,
                                                                           criterion)))
        total = self.session.scalar(select(func.count()).select_from(statement.subquery())) or 0
        page = self.session.scalars(
            statement.order_by(FhirResource.last_updated, FhirResource.id)
            .offset(offset).limit(count)) if count > 0 else []
        return int(total), [json.loads(row.resource) for row in page]

    def _matching(self, resource_type: str, criterion: Criterion) -> Any:
        token = FhirSearchToken
        query = select(token.resource_id).where(token.resource_type == resource_type,
                                                token.param == criterion.param)
        value = criterion.value
        if criterion.mode == "exact":
            query = query.where(token.value == value)
        elif criterion.mode == "prefix":
            query = query.where(token.value.startswith(value, autoescape=True))
        elif criterion.mode == "contains":
            query = query.where(token.value.contains(value, autoescape=True))
        else:  # date comparisons on ISO strings (full dates compare as text)
            column = token.value
            query = query.where({"gt": column > value, "lt": column < value,
                                 "ge": column >= value, "le": column <= value,
                                 "ne": column != value}[criterion.mode])
        if criterion.system is not None:
            query = query.where(token.system == criterion.system if criterion.system
                                else token.system.is_(None))
        return query

    # -- writing -------------------------------------------------------------
    def create(self, resource_type: str, data: Any, if_none_exist: str | None = None
               ) -> tuple[dict[str, Any], bool]:
        """Store a new resource (``(resource, True)``), or with ``if_none_exist`` return the
        one that matches (``(resource, False)``); 412 when several match."""
        check_type(resource_type)
        resource = validate_resource(resource_type, data)
        claim: tuple[str, str] | None = None
        if if_none_exist is not None:
            query = parse_qsl(if_none_exist, keep_blank_values=True)
            if not query:
                raise FhirError(400, "invalid", "If-None-Exist is empty; give a search, "
                                "e.g. identifier=system|value")
            existing = self._single_match(resource_type, query)
            if existing is not None:
                return existing, False
            claim = _identifier_claim(query)
        resource_id = str(uuid.uuid4())
        try:
            stored = self._write(resource_type, resource_id, resource, 1, claim)
        except IntegrityError:
            # Another create of the same identifier committed first: answer with its resource.
            self.session.rollback()
            assert claim is not None and if_none_exist is not None
            existing = self._single_match(resource_type,
                                          parse_qsl(if_none_exist, keep_blank_values=True))
            if existing is None:
                holder = self.session.get(FhirIdentifierClaim, (resource_type, *claim))
                if holder is None:
                    raise
                existing = self.read(resource_type, holder.resource_id)
            return existing, False
        return stored, True

    def update(self, resource_type: str, resource_id: str, data: Any,
               if_match: str | None = None) -> tuple[dict[str, Any], bool]:
        """Store a new version (``(resource, False)``), or create the resource with the id the
        client chose (``(resource, True)``); 412 when ``If-Match`` names another version."""
        check_type(resource_type)
        if isinstance(data, dict) and data.get("id") != resource_id:
            raise FhirError(400, "invalid", f"the body's id {data.get('id')!r} is not the id in "
                            f"the URL ({resource_id!r}); they must be the same")
        resource = validate_resource(resource_type, data)
        current = self.session.get(FhirResource, (resource_type, resource_id))
        version = 1 if current is None else current.version + 1
        if if_match is not None and (current is None or if_match != f'W/"{current.version}"'):
            raise FhirError(412, "conflict",
                            f"If-Match {if_match} but {resource_type}/{resource_id} is at "
                            f"{'no version' if current is None else f'W/{current.version}'}; "
                            "read it again and retry")
        return self._write(resource_type, resource_id, resource, version, None), current is None

    def _single_match(self, resource_type: str, query: list[tuple[str, str]]
                      ) -> dict[str, Any] | None:
        total, found = self.search(resource_type, query, count=2)
        if total > 1:
            raise FhirError(412, "multiple-matches",
                            f"the condition {query} matches {total} {resource_type} resources; "
                            "make it select one")
        return found[0] if found else None

    def _write(self, resource_type: str, resource_id: str, resource: dict[str, Any],
               version: int, claim: tuple[str, str] | None) -> dict[str, Any]:
        now = _now()
        resource = {**resource, "id": resource_id,
                    "meta": {**resource.get("meta", {}), "versionId": str(version),
                             "lastUpdated": _instant(now)}}
        text = json.dumps(resource, separators=(",", ":"))
        session = self.session
        current = session.get(FhirResource, (resource_type, resource_id))
        if current is None:
            session.add(FhirResource(resource_type=resource_type, id=resource_id,
                                     version=version, last_updated=now, resource=text))
        else:
            current.version, current.last_updated, current.resource = version, now, text
        session.add(FhirResourceVersion(resource_type=resource_type, id=resource_id,
                                        version=version, last_updated=now, resource=text))
        session.execute(delete(FhirSearchToken).where(
            FhirSearchToken.resource_type == resource_type,
            FhirSearchToken.resource_id == resource_id))
        session.add_all(FhirSearchToken(resource_type=resource_type, resource_id=resource_id,
                                        param=p, system=s, value=v)
                        for p, s, v in index_values(resource))
        if claim is not None:
            session.add(FhirIdentifierClaim(resource_type=resource_type, system=claim[0],
                                            value=claim[1], resource_id=resource_id))
        session.commit()
        return resource


def _identifier_claim(query: list[tuple[str, str]]) -> tuple[str, str] | None:
    """``(system, value)`` when the condition is one ``identifier=system|value``."""
    if len(query) == 1 and query[0][0] == "identifier" and "|" in query[0][1]:
        system, _, value = query[0][1].partition("|")
        if system and value:
            return system, value
    return None
