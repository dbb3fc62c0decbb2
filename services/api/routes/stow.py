"""STOW-RS (PS3.18 §10.5): storing instances through the ingest gate.

nginx sends every ``POST`` under ``/api/pacs/dicom-web/`` here, after its
``auth_request`` to the guard has checked the token and the role — so no
body is read for a caller who may not store. This route then

* streams the ``multipart/related; type="application/dicom"`` body through
  python-multipart's parser (parts are never all in memory at once: at most
  ``2 × NEURONOVA_INGEST_WORKERS + 2`` wait for the gate);
* hands each part to :class:`~neuronova_lib.ingest.store.Ingestor` on a thread
  pool: the gate checks it in a sandboxed worker, a refusal is quarantined, an
  accepted file is stored in Orthanc (checks of the next parts run while
  Orthanc stores this one);
* answers as PS3.18 says (200 / 202 / 409, see :mod:`neuronova_lib.ingest.stow`)
  and writes one audit record with the counts and the reasons.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from neuronova_lib.db.models import User
from neuronova_lib.ingest.store import Ingestor, Outcome
from neuronova_lib.ingest.stow import stow_response
from neuronova_lib.security.roles import IMAGE_WRITERS
from neuronova_lib.uids import valid_uid

from ..auditing import write_audit
from ..deps import SettingsDep, require_roles

log = logging.getLogger(__name__)

router = APIRouter(prefix="/pacs/dicom-web", tags=["dicomweb"])

Writer = Annotated[User, Depends(require_roles(*IMAGE_WRITERS))]

#: Bytes of ``Warning`` headers in one answer (nginx's proxy buffer holds all headers).
_WARNING_BUDGET = 2048
_DICOM_JSON = "application/dicom+json"


class _Refused(Exception):
    def __init__(self, status_code: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status_code, self.reason, self.detail = status_code, reason, detail


def _boundary(content_type: str) -> bytes:
    """The multipart boundary, or :class:`_Refused` when this is not a STOW-RS body."""
    mime, params = parse_options_header(content_type)
    if mime != b"multipart/related":
        raise _Refused(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "media_type",
                       "send 'Content-Type: multipart/related; type=\"application/dicom\"; "
                       f"boundary=...' (got {content_type[:80]!r})")
    kind = params.get(b"type", b"application/dicom").strip(b'"').lower()
    if kind != b"application/dicom":
        raise _Refused(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "media_type",
                       f"only application/dicom parts are stored (type={kind.decode()!r}); "
                       "send DICOM Part 10 files")
    boundary = params.get(b"boundary", b"").strip(b'"')
    if not boundary:
        raise _Refused(status.HTTP_400_BAD_REQUEST, "no_boundary",
                       "the Content-Type has no boundary parameter")
    return boundary


class _Parts:
    """python-multipart callbacks collecting whole parts."""

    def __init__(self) -> None:
        self.current = bytearray()
        self.ready: list[bytes] = []

    def callbacks(self) -> dict[str, object]:
        return {"on_part_begin": self._begin, "on_part_data": self._data,
                "on_part_end": self._end}

    def _begin(self) -> None:
        self.current = bytearray()

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.current += data[start:end]

    def _end(self) -> None:
        self.ready.append(bytes(self.current))
        self.current = bytearray()


async def _ingest_stream(request: Request, user: User, settings: SettingsDep,
                         study: str | None) -> list[Outcome]:
    """Parse the body part by part and ingest each as it completes."""
    ingestor: Ingestor = request.app.state.ingestor
    pool = request.app.state.ingest_pool
    window = 2 * settings.ingest_workers + 2
    loop = asyncio.get_running_loop()
    parts = _Parts()
    parser = MultipartParser(_boundary(request.headers.get("content-type", "")),
                             parts.callbacks())
    futures: list[asyncio.Future[Outcome]] = []
    job = functools.partial(ingestor.ingest, sender=user.username, route="stow", study=study)

    async def submit() -> None:
        for data in parts.ready:
            if len(futures) >= settings.stow_max_instances:
                raise _Refused(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "too_many_instances",
                               f"more than {settings.stow_max_instances} instances in one "
                               "request (NEURONOVA_STOW_MAX_INSTANCES); split it")
            futures.append(loop.run_in_executor(pool, job, data))
            busy = [f for f in futures if not f.done()]
            if len(busy) >= window:
                await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
        parts.ready.clear()

    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
                await submit()
        parser.finalize()
        await submit()
    except MultipartParseError as exc:
        raise _Refused(status.HTTP_400_BAD_REQUEST, "bad_multipart",
                       f"the multipart body cannot be read ({exc}); parts before the damage "
                       "were processed") from None
    finally:
        # Whatever happened to the request, parts already handed over finish and are reported.
        outcomes = await asyncio.gather(*futures) if futures else []
        request.state.outcomes = outcomes
    return outcomes


def _summary(outcomes: list[Outcome]) -> str:
    stored = sum(o.stored for o in outcomes)
    reasons = Counter(o.reason for o in outcomes if not o.stored)
    text = ", ".join(f"{r}×{n}" for r, n in reasons.most_common())
    return f"stored {stored} of {len(outcomes)}" + (f"; refused {text}" if text else "")


async def _audit(request: Request, user: User, *, decision: str, status_code: int,
                 reason: str, detail: str, study: str | None) -> None:
    def write() -> None:
        with request.app.state.sessions() as db:
            write_audit(db, request, decision=decision, status=status_code, reason=reason,
                        username=user.username, role=user.role, detail=detail[:4000],
                        study=study)
            db.commit()

    await run_in_threadpool(write)


async def _stow(request: Request, user: User, settings: SettingsDep,
                study: str | None) -> JSONResponse:
    try:
        if study is not None and not valid_uid(study):
            raise _Refused(status.HTTP_400_BAD_REQUEST, "bad_uid",
                           "the study in the URL is not a valid UID")
        outcomes = await _ingest_stream(request, user, settings, study)
        if not outcomes:
            raise _Refused(status.HTTP_400_BAD_REQUEST, "empty",
                           "the body holds no parts; send one application/dicom part per "
                           "instance")
    except _Refused as refused:
        done = getattr(request.state, "outcomes", [])
        detail = refused.detail + (f" ({_summary(done)})" if done else "")
        await _audit(request, user, decision="deny", status_code=refused.status_code,
                     reason=refused.reason, detail=detail, study=study)
        return JSONResponse({"detail": detail, "reason": refused.reason},
                            status_code=refused.status_code)
    except ClientDisconnect:
        done = getattr(request.state, "outcomes", [])
        await _audit(request, user, decision="deny", status_code=499,
                     reason="client_disconnected",
                     detail=f"the client went away mid-request; {_summary(done)}", study=study)
        raise
    code, body, warnings = stow_response(outcomes, settings.public_dicomweb_url, study)
    await _audit(request, user, decision="allow" if code != 409 else "deny", status_code=code,
                 reason="stow", detail=_summary(outcomes), study=study)
    response = JSONResponse(body, status_code=code, media_type=_DICOM_JSON)
    budget = _WARNING_BUDGET
    for warning in warnings:
        budget -= len(warning) + 11
        if budget < 0:
            break
        response.headers.append("Warning", warning)
    return response


_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "Every instance stored"},
    202: {"description": "Some stored; FailedSOPSequence names the others"},
    400: {"description": "Not a readable multipart body, or no parts"},
    403: {"description": "Not allowed to store images"},
    409: {"description": "None stored; FailedSOPSequence says why, per instance"},
    413: {"description": "Too many instances or too large"},
    415: {"description": "Not multipart/related with application/dicom parts"},
}


@router.post("/studies", responses=_RESPONSES, response_class=JSONResponse)
async def store_instances(request: Request, user: Writer,
                          settings: SettingsDep) -> JSONResponse:
    """STOW-RS: store DICOM instances (admins), each checked by the ingest gate first.

    Body: ``multipart/related; type="application/dicom"``, one Part 10 file
    per part. Refused files are kept in quarantine; ``Warning`` headers carry
    the gate's reason for each.
    """
    return await _stow(request, user, settings, None)


@router.post("/studies/{study}", responses=_RESPONSES, response_class=JSONResponse)
async def store_study_instances(study: str, request: Request, user: Writer,
                                settings: SettingsDep) -> JSONResponse:
    """STOW-RS into one study: instances of any other study are refused (``study_mismatch``)."""
    return await _stow(request, user, settings, study)
