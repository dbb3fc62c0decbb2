"""Swagger UI served from the platform itself (the API's ``/api/docs``, the guard's ``/api/pacs/docs``).

FastAPI's default docs page loads Swagger UI from a CDN, which a hospital
network (and this machine) cannot reach: the page stays blank. The assets ship
in the ``swagger-ui-bundle`` wheel and are served under each service's prefix.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles


def mount_offline_docs(app: FastAPI, prefix: str) -> None:
    """``{prefix}/docs`` with assets from ``{prefix}/docs-static/`` (no CDN)."""
    from swagger_ui_bundle import swagger_ui_path

    static = f"{prefix}/docs-static"
    redirect = f"{prefix}/docs/oauth2-redirect"
    app.mount(static, StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get(f"{prefix}/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or f"{prefix}/openapi.json",
            title=f"{app.title} — docs",
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon-32x32.png",
            oauth2_redirect_url=redirect,
        )

    @app.get(redirect, include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
