"""`docintel serve`: run the API, the streams and the workers in one process."""

from __future__ import annotations

import asyncio
import socket
from types import FrameType

import uvicorn

from docintel.core.config import Settings
from docintel.core.lock import DataDirLock
from docintel.server import logs
from docintel.server.app import create_app


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
    """Serve until stopped; raises DataDirInUse if another server owns the data dir."""
    lock = DataDirLock.acquire(settings.data_dir, settings.port)
    try:
        _serve(settings, log_level)
    finally:
        lock.release()


def _serve(settings: Settings, log_level: str) -> None:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=logs.configure(log_level.upper()),
        timeout_graceful_shutdown=5,
        # Settings are explicit; do not let uvicorn read a .env or proxy headers.
        proxy_headers=False,
    )
    _Server(config, on_exit=app.state.service.begin_shutdown).run()
