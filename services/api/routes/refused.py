"""nginx's own refusals, audited by the API when the guard cannot be reached.

nginx sends each error it answers itself to ``/api/pacs/_refused`` on the
guard; when the guard is down (its 502s among them) nginx's upstream group
falls back to this route, so the refusal still gets its audit row (service
``api``). nginx refuses this path from outside (see ``nginx.conf.j2``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from neuronova_lib.nginx_refusals import nginx_refusal

from ..auditing import write_audit
from ..deps import SettingsDep

router = APIRouter(include_in_schema=False)

_URI_LIMIT = 256


@router.api_route("/pacs/_refused",
                  methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def refused_by_nginx(request: Request, settings: SettingsDep) -> JSONResponse:
    status = int(request.headers.get("x-refused-status", "400") or 400)
    reason, detail = nginx_refusal(status, request.headers.get("x-refused-reason"),
                                   request.headers.get("x-refused-upstream"), settings)

    def write() -> None:
        with request.app.state.sessions() as db:
            record = write_audit(db, request, decision="deny", status=status, reason=reason,
                                 detail=detail)
            # The refused request, not this internal one; its path only (a signed URL's
            # token is in the query).
            record.method = request.headers.get("x-original-method", "?")[:16]
            original = request.headers.get("x-original-uri", "")[:_URI_LIMIT]
            record.path = original.partition("?")[0].encode("unicode_escape").decode("ascii")
            db.commit()

    await run_in_threadpool(write)
    return JSONResponse({"detail": "request refused", "reason": reason}, status_code=status)
