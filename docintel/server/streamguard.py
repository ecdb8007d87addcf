"""Transport-level care for the event stream: slow clients, disconnects, and caps.

1. An SSE client that stops reading costs the server little (a stream pulls from
the event log, so nothing queues up for it), but its response would stay
blocked in flow control for ever. This middleware bounds each send of the
stream: a client that has not taken a message within the timeout is dropped,
and can resume without loss with Last-Event-ID.

2. fastapi.sse has a race on client disconnect (fastapi discussion #15725): if
the keep-alive task is mid-send when the request's exit stack closes its
stream, anyio raises BrokenResourceError and uvicorn logs "Exception in ASGI
application" for an ordinary disconnect. Only that error, and only after the
response started, is absorbed here.

3. `StreamSlots` caps the streams open per user and in total.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docintel.core.errors import TooManyRequests

log = logging.getLogger("docintel.server.stream")

# The connection's task gets a fresh holder; sends run in child tasks (which
# copy the context), so they mark the shared holder rather than set the var.
# The logging filter below reads it to tell our deliberate drop from a bug.
_dropped: contextvars.ContextVar[set[str]] = contextvars.ContextVar("dropped")
INCOMPLETE = "ASGI callable returned without completing response."


class StreamGuard:
    def __init__(self, app: ASGIApp, path: str, timeout: float) -> None:
        self.app = app
        self.path = path
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        # Per connection, only what an idle stream needs: two flags and the task
        # waiting in receive(), if any. Racing each receive() against an Event
        # took two more tasks per open stream (a third of its asyncio tasks) and
        # an Event with its deque, ~3 KB per idle connection (bench/memory.py).
        gave_up = False
        interrupted = False
        receiving: asyncio.Task[Any] | None = None
        marks: set[str] = set()
        _dropped.set(marks)

        async def guarded_send(message: Message) -> None:
            nonlocal gave_up, interrupted
            if gave_up:
                return
            try:
                # asyncio.timeout, not wait_for: no task per send.
                async with asyncio.timeout(self.timeout):
                    await send(message)
            except TimeoutError:
                client = scope.get("client") or ("?", 0)
                log.warning(
                    "dropped stream client %s:%s: it read nothing for %g s",
                    client[0],
                    client[1],
                    self.timeout,
                )
                marks.add("dropped")
                gave_up = True
                if receiving is not None:
                    interrupted = True
                    receiving.cancel()

        async def guarded_receive() -> Message:
            # Once we gave up, answer as if the client had gone: the response ends now.
            nonlocal receiving, interrupted
            if gave_up:
                return {"type": "http.disconnect"}
            task = receiving = asyncio.current_task()
            try:
                return await receive()
            except asyncio.CancelledError:
                # Our own interruption, and nobody else's cancellation pending.
                if interrupted and task is not None:
                    interrupted = False
                    if task.uncancel() == 0:
                        return {"type": "http.disconnect"}
                raise
            finally:
                receiving = None

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except BaseExceptionGroup as group:
            _, rest = group.split((anyio.BrokenResourceError, anyio.ClosedResourceError))
            if rest is not None:
                raise rest from None
            log.debug("stream ended: the client went away mid-send")


class QuietDeliberateDrops(logging.Filter):
    """uvicorn reports a response we ended on purpose as an error; it is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == INCOMPLETE and "dropped" in _dropped.get(set()))


class StreamSlots:
    """Open event streams, per user and in total, within their caps.

    A stream is a long-lived connection and a subscriber the event feed wakes:
    without a cap, one user opening thousands of them slowed every other user's
    documents and multiplied the server's memory. Beyond a cap the stream is
    refused with 429 before it starts; a slot frees when its stream ends.
    """

    RETRY_AFTER = 5  # seconds: streams end when their clients leave, not on a clock

    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self.open = 0
        self._by_user: dict[str, int] = {}

    def acquire(self, user: str) -> None:
        """Take a slot for `user`, or raise TooManyRequests."""
        held = self._by_user.get(user, 0)
        if held >= self.per_user:
            raise TooManyRequests(
                f"You have {held} event streams open, the most allowed per user; "
                "close one, or try again later.",
                self.RETRY_AFTER,
                code="too_many_streams",
            )
        if self.open >= self.total:
            raise TooManyRequests(
                f"The server has {self.open} event streams open, its limit; try again later.",
                self.RETRY_AFTER,
                code="too_many_streams",
            )
        self._by_user[user] = held + 1
        self.open += 1

    def release(self, user: str) -> None:
        held = self._by_user.get(user, 0) - 1
        if held > 0:
            self._by_user[user] = held
        else:
            self._by_user.pop(user, None)  # no entry left behind per user ever seen
        self.open -= 1
