"""create_app(settings) → the FastAPI application; its lifespan runs the core service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from docintel import __version__
from docintel.core.config import Settings
from docintel.core.db import ping
from docintel.core.ratelimit import limiter
from docintel.core.resumable import ResumableUploads
from docintel.core.service import DocumentService
from docintel.server import errors
from docintel.server.allocator import tune_allocator
from docintel.server.auth import Authenticator
from docintel.server.docs import add_docs
from docintel.server.routes import auth, documents, stream, tus, web, ws
from docintel.server.streamguard import StreamSlots

log = logging.getLogger("docintel.server")
HEALTH_TIMEOUT = 5.0  # seconds the database may take to answer /healthz


def create_app(settings: Settings) -> FastAPI:
    service = DocumentService(settings)
    resumable = ResumableUploads(
        settings.data_dir,
        settings.max_upload_bytes,
        max_open=settings.max_files_per_upload,
        expiry=settings.resumable_expiry,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tune_allocator()  # large uploads' buffers go back to the system (allocator.py)
        if settings.users_are_default:
            log.warning("DOCINTEL_USERS is not set: the default user demo:demo can log in")
        await service.start()
        await asyncio.to_thread(resumable.prepare)
        sweeper = asyncio.create_task(
            tus.sweep_periodically(resumable, min(3600.0, settings.resumable_expiry)),
            name="docintel-resumable-sweeper",
        )
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
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
    app.state.authenticator = Authenticator(settings, service.db)
    app.state.upload_limiter = limiter(
        service.db, settings.shared_database, "uploads", settings.uploads_per_minute
    )
    app.state.resumable = resumable
    app.state.stream_slots = StreamSlots(settings.max_streams_per_user, settings.max_streams)
    errors.install(app)
    if settings.cors_origin_list:
        # Off by default: only pages served from the listed origins may call the
        # API from a browser. Tokens travel in headers (or ?access_token=), never
        # in cookies, so no credentials mode is needed.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", *tus.REQUEST_HEADERS],
            expose_headers=["X-Last-Event-ID", "Retry-After", *tus.EXPOSED_HEADERS],
            max_age=600,
        )
    app.include_router(auth.router)
    # Before /documents/{id}, which would match "stream" and "ws".
    app.include_router(stream.router)
    app.include_router(ws.router)
    app.include_router(documents.router)
    app.include_router(tus.router)
    app.include_router(web.router)  # the page at / (docintel/server/web/)
    app.add_middleware(tus.TusResumableHeader)
    add_docs(app)

    @app.get(
        "/healthz",
        tags=["meta"],
        responses={
            503: {
                "description": "The shared database cannot be reached (`status`: unavailable).",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def healthz() -> JSONResponse:
        """Liveness, with open event streams and asyncio tasks (to spot leaks)."""
        body: dict[str, object] = {
            "status": "ok",
            "version": __version__,
            "streams": service.open_streams,
            "tasks": len(asyncio.all_tasks()),
        }
        if settings.shared_database:
            # PostgreSQL can be lost while this process lives: say so, so that
            # an orchestrator's health check takes the node out.
            try:
                await asyncio.wait_for(service.db.run(ping), HEALTH_TIMEOUT)
            except Exception as exc:
                log.warning("health check: the database is unavailable (%s)", exc)
                return JSONResponse({**body, "status": "unavailable"}, status_code=503)
        return JSONResponse(body)

    return app
