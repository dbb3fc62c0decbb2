"""The platform API application.

Started by uvicorn as a factory, so that settings are read when the process
starts, not when the module is imported::

    uvicorn --factory services.api.app:create_app --host 127.0.0.1 --port 8101

Every route lives under ``/api`` (nginx forwards ``/api/...`` unchanged); the
interactive docs are at ``/api/docs`` and the schema at ``/api/openapi.json``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from neuronova_lib import __version__
from neuronova_lib.config import Settings, get_settings
from neuronova_lib.db.engine import session_factory
from neuronova_lib.db.migrate import upgrade_database
from neuronova_lib.ingest import Gate
from neuronova_lib.ingest.store import Ingestor
from neuronova_lib.security.tokens import token_service

from services.openapi_docs import mount_offline_docs

from . import fhir
from .inference_runner import InferenceRunner
from .jobs import JobRunner
from .quarantine_retention import RetentionSweeper
from .routes import (audit, auth, auth_check, health, jobs, models, patients, quarantine,
                     refused, signin, stow, studies, tokens, users)
from .routes import inference, viewer

log = logging.getLogger(__name__)

API_PREFIX = "/api"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: the ``NEURONOVA_*`` environment).

    Nothing touches the disk until the app starts: its lifespan creates or
    migrates the database and opens the signing keys of the data dir, so
    building an app (for its OpenAPI schema, say) has no side effects.

    Parameters
    ----------
    settings
        Configuration; tests pass their own with a temporary data dir.

    Returns
    -------
    fastapi.FastAPI
        Settings on ``app.state.settings``; once started also
        ``app.state.sessions`` (a session factory) and ``app.state.tokens``
        (the :class:`~neuronova_lib.security.tokens.TokenService`).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upgrade_database(settings.sqlalchemy_url)
        app.state.sessions = session_factory(settings.sqlalchemy_url)
        app.state.tokens = token_service(settings)
        # Upload jobs run on the Dask cluster, several at once; unfinished ones resume.
        app.state.jobs = JobRunner(settings, app.state.sessions)
        app.state.jobs.start()
        # Inference jobs run on Dask; the client (or local cluster) is made on the first job.
        app.state.inference = InferenceRunner(settings, app.state.sessions)
        app.state.inference.start()
        # Quarantine retention: purged now, then hourly by a thread that stops with the app.
        app.state.quarantine_retention = RetentionSweeper(settings)
        app.state.quarantine_retention.start()
        # STOW-RS: the ingest gate's sandboxed workers start on the first request.
        app.state.gate = Gate(settings)
        app.state.ingestor = Ingestor(settings, app.state.gate)
        app.state.ingest_pool = ThreadPoolExecutor(settings.ingest_workers + 2,
                                                   thread_name_prefix="stow")
        log.info("API ready; data dir %s", settings.home)
        try:
            yield
        finally:
            app.state.ingest_pool.shutdown(wait=True)
            app.state.gate.close()
            app.state.quarantine_retention.stop()
            app.state.jobs.stop()
            if getattr(app.state, "patient_chain", None) is not None:
                app.state.patient_chain.close()
            app.state.inference.stop()

    app = FastAPI(
        title="NeuroNova platform API",
        version=__version__,
        summary="Sign-in and tokens, users and roles, audit log, study uploads and their jobs.",
        docs_url=None,  # served by mount_offline_docs: no CDN
        redoc_url=None,  # ReDoc has no offline bundle here
        openapi_url=f"{API_PREFIX}/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    mount_offline_docs(app, API_PREFIX)

    api = APIRouter(prefix=API_PREFIX)
    for module in (health, auth, auth_check, users, tokens, audit, studies, jobs, quarantine, stow,
                   refused, patients, models):
        api.include_router(module.router)
    api.include_router(inference.router)
    api.include_router(viewer.router)
    app.include_router(api)
    # The browser sign-in lives outside /api: nginx forwards /login and /logout.
    app.include_router(signin.router)
    fhir.install(app)  # /fhir/R4: the platform's FHIR R4 facade
    return app
