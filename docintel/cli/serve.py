"""`docintel serve`: run the API, the streams and the workers in one process."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from types import FrameType

import uvicorn

from docintel.core.config import Settings
from docintel.core.lock import DataDirLock
from docintel.server import logs
from docintel.server.app import create_app
from docintel.server.connections import (
    ConnectionLimits,
    FdBudget,
    fd_budget,
    limited_protocol,
    raise_open_files_limit,
)

log = logging.getLogger("docintel.server")


class _Server(uvicorn.Server):
    """uvicorn waits for open responses before the lifespan shutdown runs, and SSE
    responses never end by themselves: so on the first signal, end the streams."""

    def __init__(self, config: uvicorn.Config, on_exit: object) -> None:
        super().__init__(config)
        self._on_exit = on_exit
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_exit)  # type: ignore[arg-type]
        super().handle_exit(sig, frame)


def run(settings: Settings, log_level: str = "info") -> None:
    """Serve until stopped; raises DataDirInUse if another server owns the data dir.

    Only the embedded SQLite database has one owner. With PostgreSQL any number
    of API and worker processes share the database and the data dir.
    """
    if settings.shared_database:
        _serve(settings, log_level)
        return
    lock = DataDirLock.acquire(settings.data_dir, settings.port)
    try:
        _serve(settings, log_level)
    finally:
        lock.release()


def _serve(settings: Settings, log_level: str) -> None:
    # First, before anything holds descriptors: each connection takes one.
    soft_before, open_files, hard = raise_open_files_limit()
    budget = fd_budget(settings.max_connections, open_files)
    limits = ConnectionLimits(
        max_connections=budget.connections,
        max_lingering=budget.lingering,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        body_min_rate=settings.body_min_rate,
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=logs.configure(log_level.upper()),
        timeout_graceful_shutdown=5,
        # Settings are explicit; do not let uvicorn read a .env or proxy headers.
        proxy_headers=False,
        # uvicorn's h11 protocol (what "auto" picks without httptools), with
        # header and body deadlines and the connection cap (connections.py).
        http=limited_protocol(limits),
        # Idle time between requests on a kept-alive connection (uvicorn's default).
        timeout_keep_alive=5,
        backlog=budget.backlog,
    )
    _log_limits(settings, budget, (soft_before, open_files, hard))
    _Server(config, on_exit=app.state.service.begin_shutdown).run()


def _log_limits(settings: Settings, budget: FdBudget, nofile: tuple[int, int, int]) -> None:
    """Say which limits hold, after uvicorn's Config has set up logging."""
    soft_before, open_files, hard = nofile
    if open_files != soft_before:
        log.info("open files limit raised from %d to %d (the hard limit)", soft_before, open_files)
    elif open_files == hard or hard == resource.RLIM_INFINITY:
        log.info("open files limit: %d (as high as it goes)", open_files)
    else:
        log.warning("open files limit: %d; it could not be raised to %d", open_files, hard)
    if budget.connections < settings.max_connections:
        log.warning(
            "at most %d connections (DOCINTEL_MAX_CONNECTIONS=%d does not fit the open files "
            "limit of %d); listen backlog %d",
            budget.connections,
            settings.max_connections,
            open_files,
            budget.backlog,
        )
    else:
        log.info("at most %d connections; listen backlog %d", budget.connections, budget.backlog)
    log.info(
        "request headers within %g s, bodies idle at most %g s and at least %d bytes/s; "
        "event streams: %d in all, %d per user",
        settings.header_timeout,
        settings.body_timeout,
        settings.body_min_rate,
        settings.max_streams,
        settings.max_streams_per_user,
    )
