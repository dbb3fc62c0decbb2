"""The few Orthanc calls a bulk run needs beyond :class:`~neuronova_lib.orthanc_store.OrthancStore`.

Listing a study's instances and deleting one (fetching a file is in the shared store):
the in-place replacement (see :mod:`.worker`) is built from these. They are
kept here, in a small subclass, so that the shared store stays what the rest
of the platform uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from neuronova_lib.orthanc_store import OrthancStore


class OrthancAccess(OrthancStore):
    """:class:`OrthancStore` plus reads, deletes and listings by Orthanc identifier."""

    def ping(self) -> dict[str, Any]:
        """Orthanc's ``/system`` answer; raises if Orthanc is down or refuses the account."""
        return dict(self.get_json("/system"))

    def delete_instance(self, instance_id: str) -> bool:
        """Delete one instance; ``False`` if it was already gone."""
        response = self.session.delete(
            f"{self.base_url}/instances/{instance_id}", timeout=self.timeout
        )
        if response.status_code == 404:
            return False
        self._check(response, f"deleting instance {instance_id}")
        return True

    def study_instances(self, study_id: str) -> list[dict[str, Any]]:
        """Every instance of one study (Orthanc identifiers, ``FileSize``, main tags).

        One request per study: metadata only, never pixel data.
        """
        return list(self.get_json(f"/studies/{study_id}/instances"))

    def iter_study_ids(self, page: int = 500) -> Iterator[str]:
        """Every study's Orthanc identifier, fetched ``page`` at a time (a PACS can be large)."""
        since = 0
        while True:
            chunk = self.get_json(f"/studies?since={since}&limit={page}")
            yield from (str(item) for item in chunk)
            if len(chunk) < page:
                return
            since += page
