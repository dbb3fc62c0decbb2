"""Writing the API's own decisions (sign-ins, refreshes, refusals) to the audit log.

The guard proxy writes its decisions to the same table with ``service="proxy"``;
admins read both through ``GET /api/audit``.
"""

from __future__ import annotations

from fastapi import Request
from sqlalchemy.orm import Session

from neuronova_lib.db.audit import RUN_HEADER, run_id_header
from neuronova_lib.db.models import AuditRecord

SERVICE = "api"
def write_audit(
    db: Session,
    request: Request,
    *,
    decision: str,
    status: int,
    reason: str,
    username: str | None = None,
    role: str | None = None,
    detail: str | None = None,
    study: str | None = None,
    token_id: str | None = None,
    server: str | None = None,
) -> AuditRecord:
    """Add one audit record for ``request`` (the caller commits).

    The client address is what uvicorn reports, which behind nginx is the
    ``X-Forwarded-For`` address (uvicorn trusts it from loopback only). ``server`` is the
    hub server of a kernel's token; the MLflow run is the caller's ``X-NeuroNova-Run``.
    """
    record = AuditRecord(
        service=SERVICE,
        username=username[:64] if username else username,
        role=role,
        method=request.method,
        path=request.url.path,
        study=study,
        decision=decision,
        status=status,
        reason=reason,
        detail=detail,
        client=request.client.host if request.client else None,
        token_id=token_id,
        # nginx's request id: joins this row to the guard's row and the access log line.
        request_id=(request.headers.get("x-request-id") or "")[:64] or None,
        server=server[:128] if server else None,
        run_id=run_id_header(request.headers.get(RUN_HEADER)),
    )
    db.add(record)
    return record
