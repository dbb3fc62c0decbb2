"""Mode (c) of ``proxy_overhead.py``: the guard re-built as a plain streaming proxy.

This is the design the platform did *not* choose, kept only as a yardstick:
Python checks the bearer token and then moves every image byte itself
(``httpx.AsyncClient.stream`` from Orthanc into a ``StreamingResponse``),
instead of answering ``X-Accel-Redirect`` and letting nginx move the bytes.

To make the comparison about *who moves the bytes* and nothing else, it does
the same token work as the guard (a :class:`VerifiedTokenCache` over
``TokenService.verify(token, "access")``: one signature check per token,
then a cache hit per request), is routed by the same Starlette ``Route`` and
runs under the same uvicorn command line (one worker). It does *less* than
the guard otherwise: no URI checks, no role or study scope, no audit row.
So if the guard beats it, the guard wins despite doing more.

Benchmark only: it forwards any path under the prefix to Orthanc with the
service account. Never expose it.

It forwards to the Orthanc route the guard itself redirects frames to
(``NEURONOVA_BENCH_ORTHANC_ROOT``: ``/dicom-web`` for the DICOMweb plugin,
``/neuronova/dicom-web`` for the platform's own WADO plugin), so both move
the same bytes from the same Orthanc code.

Run: ``uvicorn --factory benchmarks.streaming_proxy:create_app`` from the
repository root with the platform's ``NEURONOVA_*`` environment.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from neuronova_lib.config import Settings, get_settings
from neuronova_lib.security.secret_store import orthanc_service_account
from neuronova_lib.security.tokens import TokenError, token_service
from services.proxy.guard import VerifiedTokenCache

PREFIX = "/api/pacs/dicom-web"
ORTHANC_ROOT_VARIABLE = "NEURONOVA_BENCH_ORTHANC_ROOT"
#: Response headers of Orthanc worth passing on; hop-by-hop ones must not be.
_PASSED_HEADERS = ("content-type", "content-length")


def _basic(username: str, password: str) -> str:
    """The service account's header, built once instead of by httpx on every request."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _unauthorized(reason: str) -> Response:
    return JSONResponse({"detail": "unauthorized", "reason": reason}, status_code=401)


def create_app(settings: Settings | None = None, orthanc_root: str | None = None) -> FastAPI:
    """Build the streaming proxy for one platform's data dir and Orthanc."""
    settings = settings or get_settings()
    root = (orthanc_root or os.environ.get(ORTHANC_ROOT_VARIABLE) or "/dicom-web").rstrip("/")
    verified = VerifiedTokenCache(token_service(settings))
    account = orthanc_service_account(settings.secrets_dir)
    orthanc_auth = _basic(account["username"], account["password"])
    state: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # A pool as large as nginx's upstream keepalive, so neither side starves for sockets.
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=settings.orthanc_url, limits=limits, timeout=httpx.Timeout(60.0)
        ) as client:
            state["client"] = client
            yield

    async def dicomweb(request: Request) -> Response:
        """Check the token, then stream Orthanc's answer through Python."""
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized("no_token")
        try:
            verified.verify(token.strip(), "access")
        except TokenError as exc:
            return _unauthorized(exc.reason)
        client = state["client"]
        upstream = client.build_request(
            "GET",
            f"{root}/{request.path_params['path']}",
            params=request.url.query or None,
            headers={"accept": request.headers.get("accept", "*/*"), "authorization": orthanc_auth},
        )
        answer = await client.send(upstream, stream=True)
        headers = {k: v for k, v in answer.headers.items() if k.lower() in _PASSED_HEADERS}
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers=headers,
            background=BackgroundTask(answer.aclose),
        )

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = FastAPI(title="benchmark streaming proxy", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.router.routes.append(Route(PREFIX + "/{path:path}", dicomweb, methods=["GET", "HEAD"]))
    app.router.routes.append(Route("/healthz", health, methods=["GET"]))
    return app
