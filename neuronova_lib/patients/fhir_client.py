"""A FHIR R4 REST client for the patient chain, written to the specification, not to one
server: search by ``identifier=system|value``, conditional create with ``If-None-Exist``,
``searchset`` Bundles read by their ``entry[].resource``. Tested against the platform's
facade and against Medplum's fhir-router, unchanged.

Failures are :class:`~neuronova_lib.patients.errors.SourceUnavailable`: no connection,
timeout, 5xx, 401/403, and any answer that is not the FHIR JSON the request calls for.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from ..fhir.outcome import FhirError
from ..fhir.validation import validate_resource
from .errors import SourceUnavailable, send

log = logging.getLogger(__name__)
FHIR_JSON = "application/fhir+json"


class FhirClient:
    """One FHIR server at ``base_url`` (``.../fhir/R4``), over one pooled ``httpx.Client``.

    Parameters
    ----------
    base_url
        The server's base; resources are ``{base_url}/{type}``.
    timeout
        Seconds for connecting and for each read.
    auth
        Default authentication (``httpx.Auth``); each call may pass its own, e.g. a token
        minted for the user the request is made for.
    client
        An ``httpx.Client`` to use (tests, shared pools); one is made otherwise.
    """

    source = "fhir"

    def __init__(self, base_url: str, timeout: float = 5.0, auth: httpx.Auth | None = None,
                 client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.client = client or httpx.Client(timeout=timeout, headers={"Accept": FHIR_JSON})

    def close(self) -> None:
        self.client.close()

    def _request(self, method: str, path: str, auth: httpx.Auth | None, **kwargs: Any
                 ) -> httpx.Response:
        url = f"{self.base_url}/{path}"
        response = send(self.client, "fhir", method, url,
                        auth=auth or self.auth or httpx.USE_CLIENT_DEFAULT, **kwargs)
        if response.status_code in (401, 403):
            raise SourceUnavailable("fhir", "refused",
                                    f"{method} {url} answered {response.status_code}: "
                                    f"{_issue(response)}; check NEURONOVA_FHIR_TOKEN")
        if response.status_code >= 500:
            raise SourceUnavailable("fhir", "error", f"{method} {url} answered "
                                    f"{response.status_code}: {_issue(response)}")
        return response

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise SourceUnavailable("fhir", "garbage",
                                    f"{what}: the answer ({response.status_code}, "
                                    f"{response.headers.get('content-type')}) is not JSON: "
                                    f"{response.text[:120]!r}") from None
        if not isinstance(body, dict) or "resourceType" not in body:
            raise SourceUnavailable("fhir", "garbage",
                                    f"{what}: the answer is not a FHIR resource: "
                                    f"{str(body)[:120]!r}")
        return body

    def search(self, resource_type: str, params: dict[str, str],
               auth: httpx.Auth | None = None) -> list[dict[str, Any]]:
        """The resources of the first page of a search (each validated as R4)."""
        response = self._request("GET", resource_type, auth, params=params)
        what = f"search {resource_type}?{params}"
        if response.status_code != 200:
            raise SourceUnavailable("fhir", "error", f"{what} answered "
                                    f"{response.status_code}: {_issue(response)}")
        bundle = self._json(response, what)
        if bundle["resourceType"] != "Bundle":
            raise SourceUnavailable("fhir", "garbage",
                                    f"{what}: answered a {bundle['resourceType']}, not a Bundle")
        found = []
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
                continue  # OperationOutcome entries (search.mode "outcome"), includes
            found.append(self._valid(resource, what))
        return found

    def _valid(self, resource: dict[str, Any], what: str) -> dict[str, Any]:
        try:
            checked = validate_resource(resource["resourceType"], resource)
        except FhirError as exc:
            raise SourceUnavailable("fhir", "garbage", f"{what}: {exc.diagnostics}") from None
        return checked

    def find_by_identifier(self, resource_type: str, system: str, value: str,
                           auth: httpx.Auth | None = None) -> dict[str, Any] | None:
        """The resource with this identifier, or ``None``; several is logged, the first
        (oldest on most servers) returned."""
        found = self.search(resource_type, {"identifier": f"{system}|{value}"}, auth)
        if len(found) > 1:
            log.warning("FHIR server %s has %d %s with identifier %s|%s; using %s",
                        self.base_url, len(found), resource_type, system, value,
                        found[0].get("id"))
        return found[0] if found else None

    def create_if_none(self, resource: dict[str, Any], system: str, value: str,
                       auth: httpx.Auth | None = None) -> dict[str, Any]:
        """Create ``resource`` unless one with this identifier exists (``If-None-Exist``);
        returns the stored resource, new or existing."""
        rtype = resource["resourceType"]
        response = self._request(
            "POST", rtype, auth, json=resource,
            headers={"Content-Type": FHIR_JSON, "If-None-Exist": f"identifier={system}|{value}",
                     "Prefer": "return=representation"})
        what = f"create {rtype} {system}|{value}"
        if response.status_code not in (200, 201):
            raise SourceUnavailable("fhir", "error", f"{what} answered "
                                    f"{response.status_code}: {_issue(response)}")
        if not response.content:  # a server that ignores Prefer: read what it made
            found = self.find_by_identifier(rtype, system, value, auth)
            if found is None:
                raise SourceUnavailable("fhir", "garbage",
                                        f"{what} answered {response.status_code} but the "
                                        "resource cannot be found afterwards")
            return found
        return self._valid(self._json(response, what), what)

    def put(self, resource: dict[str, Any], auth: httpx.Auth | None = None) -> dict[str, Any]:
        """Update (or create with its id) ``resource``."""
        what = f"update {resource['resourceType']}/{resource['id']}"
        response = self._request("PUT", f"{resource['resourceType']}/{resource['id']}", auth,
                                 json=resource, headers={"Content-Type": FHIR_JSON})
        if response.status_code not in (200, 201):
            raise SourceUnavailable("fhir", "error", f"{what} answered "
                                    f"{response.status_code}: {_issue(response)}")
        return self._json(response, what)


def _issue(response: httpx.Response) -> str:
    """The first OperationOutcome issue's words, or the start of the body."""
    try:
        body = response.json()
        issue = body["issue"][0]
        return str(issue.get("diagnostics") or issue.get("details", {}).get("text")
                   or issue.get("code"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return response.text[:200] or "(empty body)"


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>``; ``token`` may be a callable minting a fresh one."""

    def __init__(self, token: str | Any) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Any:
        token = self.token() if callable(self.token) else self.token
        request.headers["Authorization"] = f"Bearer {token}"
        yield request
