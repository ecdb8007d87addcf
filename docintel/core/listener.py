"""Wake-ups across processes (PostgreSQL): LISTEN for commits that appended events.

Every transaction that appends to the event log notifies (a trigger, m006;
NOTIFY is delivered at commit and not at all on rollback). One listener per
process turns each notification into the same callbacks a local commit calls
(`Database.on_commit`: the event feed reads the new events, idle workers
claim), so a stream on one node sees a transition written on another at once,
and an upload on one node starts work on every node.

A notification can be lost (the listener's connection drops); the event log,
not the notification, is the truth. So the listener also calls the callbacks
after every `RECHECK_SECONDS` without one (a lost notification costs at most
that delay, never an event), and once after each (re)connect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import psycopg

from docintel.core.db import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

RECHECK_SECONDS = 1.0
RECONNECT_MAX_DELAY = 5.0


class Listener:
    def __init__(self, url: str, callbacks: Sequence[Callable[[], None]]) -> None:
        self.url = url
        self.callbacks = callbacks
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="docintel-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _wake(self) -> None:
        for callback in self.callbacks:
            callback()

    async def _run(self) -> None:
        delay = 0.1
        while True:
            began = asyncio.get_running_loop().time()
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:
                log.warning("lost the database's notifications (%s); reconnecting", exc)
            if asyncio.get_running_loop().time() - began > RECONNECT_MAX_DELAY:
                delay = 0.1  # it had been working: a fresh start
            # Meanwhile, look at the log as if notified: nothing waits on a reconnect.
            self._wake()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=10
        ) as conn:
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._wake()  # whatever was committed while we were not listening
            while True:
                async for _ in conn.notifies(timeout=RECHECK_SECONDS):
                    self._wake()
                # A quiet second: look anyway, and make sure the connection lives.
                self._wake()
                await conn.execute("SELECT 1")
