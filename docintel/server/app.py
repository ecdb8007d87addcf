"""create_app(settings) → the FastAPI application; its lifespan runs the core service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from docintel import __version__
from docintel.core.config import Settings
from docintel.core.errors import (
    AmbiguousId,
    DocintelError,
    DocumentNotFound,
    FileTooLarge,
    IdTooShort,
    RejectedUpload,
    UnsupportedFileType,
)
from docintel.core.ratelimit import RateLimiter
from docintel.core.service import DocumentService
from docintel.server.auth import Authenticator
from docintel.server.docs import add_docs
from docintel.server.routes import auth, documents, stream
from docintel.server.schemas import EventEncoder
from docintel.server.streamguard import StreamGuard

log = logging.getLogger("docintel.server")

# Core errors that reach the edge, by HTTP status; the most specific class wins.
STATUS_FOR_ERROR: list[tuple[type[DocintelError], int]] = [
    (FileTooLarge, 413),
    (UnsupportedFileType, 415),
    (RejectedUpload, 400),
    (DocumentNotFound, 404),
    (IdTooShort, 400),
    (AmbiguousId, 409),
]


def create_app(settings: Settings) -> FastAPI:
    service = DocumentService(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.users_are_default:
            log.warning("DOCINTEL_USERS is not set: the default user demo:demo can log in")
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="docintel",
        version=__version__,
        summary="Upload PDF and text documents; watch them extracted and analysed live.",
        lifespan=lifespan,
        # Served from the package by add_docs: FastAPI's own load from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.authenticator = Authenticator(settings)
    app.state.event_encoder = EventEncoder()
    app.state.upload_limiter = RateLimiter(settings.uploads_per_minute)
    _add_error_handlers(app)
    app.add_middleware(StreamGuard, path="/documents/stream", timeout=settings.stream_send_timeout)
    app.include_router(auth.router)
    app.include_router(stream.router)  # before /documents/{id}, which would match "stream"
    app.include_router(documents.router)
    add_docs(app)

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, object]:
        """Liveness, with open event streams and asyncio tasks (to spot leaks)."""
        return {
            "status": "ok",
            "version": __version__,
            "streams": service.open_streams,
            "tasks": len(asyncio.all_tasks()),
        }

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DocintelError)
    async def docintel_error(request: Request, exc: DocintelError) -> JSONResponse:
        status = next((s for cls, s in STATUS_FOR_ERROR if isinstance(exc, cls)), 500)
        return _error(status, exc.code, exc.message, details=exc.details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict):
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: answer in the spec's error shape. Starlette's
        # ServerErrorMiddleware re-raises after this, so uvicorn logs the trace.
        return _error(500, "internal_error", "An unexpected error occurred; see the server log.")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _error(422, "invalid_request", f"The request is not valid: {problems}.")


def _error(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
) -> JSONResponse:
    body = {"code": code, "message": message, **(details or {})}
    return JSONResponse({"detail": body}, status, headers=headers)
