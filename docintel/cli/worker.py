"""`docintel worker`: pipeline workers only, beside API nodes, on PostgreSQL.

The same service as `serve` runs (`DocumentService`: the queue, the leases,
the pipeline), with no HTTP server, so with no event streams and no reader of
the event log. A stop signal gives running documents the
same grace as `serve`, then puts them back in the queue without counting the
attempt; a worker that dies instead has its documents taken up by another
worker once their leases expire.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import signal

from docintel.core.config import Settings
from docintel.core.service import DocumentService
from docintel.server import logs

log = logging.getLogger("docintel.worker")


def run(settings: Settings, log_level: str = "info") -> int:
    """Work until SIGINT or SIGTERM; returns the exit status (130 after Ctrl-C)."""
    logging.config.dictConfig(logs.configure(log_level.upper()))
    return asyncio.run(_work(settings))


async def _work(settings: Settings) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    received: list[int] = []

    def stop(sig: int) -> None:
        received.append(sig)
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    service = DocumentService(settings, streams=False)  # no HTTP server: no streams
    await service.start()
    log.info(
        "worker %s: %d at a time, leases of %g s",
        service.workers.worker_id,
        settings.workers,
        settings.lease_seconds,
    )
    try:
        await stopping.wait()
    finally:
        log.info("stopping: running documents get 5 s, then go back to the queue")
        await service.stop()
    return 130 if received and received[0] == signal.SIGINT else 0
