"""Liveness for nginx, the stack's supervisor and tests: is the database reachable?"""

from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..deps import SessionDep

router = APIRouter(tags=["health"])


@router.get("/health", responses={503: {"description": "Database unreachable"}})
def health(db: SessionDep) -> JSONResponse:
    """``{"status": "ok"}`` when a trivial query succeeds, else 503 with the reason."""
    try:
        db.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return JSONResponse(
            {"status": "error", "detail": f"database unreachable: {exc.__class__.__name__}"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    return JSONResponse({"status": "ok"})
