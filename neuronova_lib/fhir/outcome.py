"""OperationOutcome: how every FHIR error of the facade is answered."""

from __future__ import annotations

from typing import Any


def operation_outcome(diagnostics: str, code: str = "processing",
                      severity: str = "error", expression: list[str] | None = None
                      ) -> dict[str, Any]:
    """An R4 ``OperationOutcome`` with one issue (``code`` from the issue-type value set)."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class FhirError(Exception):
    """A request the facade refuses: the HTTP status and the OperationOutcome to send.

    Parameters
    ----------
    status
        400 (unreadable or unsupported request), 404, 405, 409, 410, 412 or 422 (a
        resource that parses but breaks the rules of its type).
    code
        The FHIR issue type (``invalid``, ``not-found``, ``conflict``, ``not-supported``, ...).
    diagnostics
        What was wrong and what to do, for a person.
    """

    def __init__(self, status: int, code: str, diagnostics: str,
                 expression: list[str] | None = None) -> None:
        super().__init__(diagnostics)
        self.status, self.code, self.diagnostics = status, code, diagnostics
        self.expression = expression

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.diagnostics, self.code, expression=self.expression)
