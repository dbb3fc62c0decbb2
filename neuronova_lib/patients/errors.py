"""What can go wrong when the chain asks a source, kept apart from "not found"."""

from __future__ import annotations

from typing import Any

import httpx


class SourceUnavailable(Exception):
    """A source could not answer: down, too slow, refusing us, or answering garbage.

    Attributes
    ----------
    source
        ``"fhir"`` or ``"openemr"``.
    kind
        ``down`` (no connection), ``timeout``, ``refused`` (401/403 after a fresh token),
        ``error`` (5xx) or ``garbage`` (an answer that is not what the protocol says).
    """

    def __init__(self, source: str, kind: str, detail: str) -> None:
        super().__init__(f"{source} {kind}: {detail}")
        self.source, self.kind, self.detail = source, kind, detail


class PatientNotFound(Exception):
    """No source has the patient; ``unavailable`` names those that could not be asked."""

    def __init__(self, patient_id: str, asked: list[str], unavailable: dict[str, str]) -> None:
        self.patient_id, self.asked, self.unavailable = patient_id, asked, unavailable
        if unavailable:
            message = (f"patient {patient_id!r} was not found in "
                       f"{', '.join(s for s in asked if s not in unavailable)}, and "
                       + "; ".join(f"{s} is unavailable ({why})" for s, why in unavailable.items())
                       + ": it may exist there; try again when it is back")
        else:
            message = f"patient {patient_id!r} was not found in {', '.join(asked)}"
        super().__init__(message)


def send(client: httpx.Client, source: str, method: str, url: str, **kwargs: Any
         ) -> httpx.Response:
    """``client.request(...)``, a connection failure or timeout raised as
    :class:`SourceUnavailable` naming the setting that bounds the wait."""
    try:
        return client.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise SourceUnavailable(source, "timeout",
                                f"{method} {url} took longer than the timeout "
                                f"(NEURONOVA_{source.upper()}_TIMEOUT)") from None
    except httpx.TransportError as exc:
        raise SourceUnavailable(source, "down", f"{method} {url}: {exc}") from None
