"""The interactive API docs, served from this server alone: no CDN, no internet.

FastAPI's own /docs and /redoc load Swagger UI and ReDoc from a CDN, so they
are blank on a machine without internet. The scripts, styles and icon come
from `fastapi-offline`, a maintained PyPI package that ships Swagger UI 5 and
ReDoc 2 (their licences: Apache-2.0 and MIT); this module mounts its files and
serves the two pages with FastAPI's own HTML. Like /openapi.json, the docs
need no token.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
ASSETS = Path(str(files("fastapi_offline") / "static"))


def add_docs(app: FastAPI) -> None:
    """Serve /docs and /redoc; the app must be made with `docs_url=None, redoc_url=None`."""
    # check_dir: a package that stopped shipping the files fails at start-up, not in a browser.
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS, check_dir=True), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} — API docs",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=root + oauth2_redirect_url if oauth2_redirect_url else None,
            # No "valid" badge fetched from validator.swagger.io (another host).
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )

    if oauth2_redirect_url:

        @app.get(oauth2_redirect_url, include_in_schema=False)
        async def swagger_ui_oauth2_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} — API reference",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,  # fonts.googleapis.com: another CDN
        )
