"""Orthanc's REST API as the platform's internal service account sees it.

Platform tools (the demo loader, later the ingest gate and bulk transcoding)
store and look up instances here; users never reach Orthanc directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from .config import Settings
from .security.secret_store import orthanc_service_account


class OrthancStore:
    """A keep-alive session to Orthanc with the service credentials."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.auth = (username, password)

    @classmethod
    def from_settings(cls, settings: Settings) -> "OrthancStore":
        account = orthanc_service_account(settings.secrets_dir)
        return cls(settings.orthanc_url, account["username"], account["password"])

    def _check(self, response: requests.Response, what: str) -> requests.Response:
        if response.status_code >= 400:
            raise requests.HTTPError(
                f"Orthanc refused {what}: HTTP {response.status_code}: {response.text[:300]}",
                response=response,
            )
        return response

    def store(self, data: bytes) -> dict[str, Any]:
        """Store one Part 10 file; Orthanc answers ``Success`` or ``AlreadyStored``."""
        response = self.session.post(
            f"{self.base_url}/instances", data=data, timeout=self.timeout,
            headers={"Content-Type": "application/dicom"},
        )
        return self._check(response, "the instance").json()

    def store_file(self, path: Path | str) -> dict[str, Any]:
        return self.store(Path(path).read_bytes())

    def instance_file(self, instance_id: str) -> bytes | None:
        """The stored Part 10 file, byte for byte; ``None`` if Orthanc has no such instance."""
        response = self.session.get(
            f"{self.base_url}/instances/{instance_id}/file", timeout=self.timeout
        )
        if response.status_code == 404:
            return None
        return self._check(response, f"the file of instance {instance_id}").content

    def get_json(self, path: str) -> Any:
        response = self.session.get(f"{self.base_url}{path}", timeout=self.timeout)
        return self._check(response, path).json()

    def study_ids(self) -> list[str]:
        """Orthanc's own identifiers of every study."""
        return list(self.get_json("/studies"))

    def lookup(self, uid: str, level: str) -> str | None:
        """Orthanc's identifier of the ``level`` ("Study", "Series", "Instance") with this UID."""
        response = self.session.post(f"{self.base_url}/tools/lookup", data=uid, timeout=self.timeout)
        for item in self._check(response, "the lookup").json():
            if item.get("Type") == level:
                return str(item["ID"])
        return None

    def find_study(self, study_uid: str) -> str | None:
        """Orthanc's identifier of the study with this StudyInstanceUID, if stored."""
        return self.lookup(study_uid, "Study")

    def find_instance(self, sop_uid: str) -> str | None:
        """Orthanc's identifier of the instance with this SOPInstanceUID, if stored."""
        return self.lookup(sop_uid, "Instance")
