"""Care for the event streams: slow clients and caps.

1. An SSE client that stops reading costs the server little (a stream pulls from
the event log, so nothing queues up for it), but its response would stay
blocked in flow control for ever. Each send of a stream is bounded: a client
that has not taken a message within the timeout is dropped, and can resume
without loss with Last-Event-ID; `QuietDeliberateDrops` keeps uvicorn from
reporting that drop as an application error.

2. `StreamSlots` caps the streams open per user and in total.
"""

from __future__ import annotations

import contextvars
import logging

from starlette.types import Scope

from docintel.core.errors import TooManyRequests

log = logging.getLogger("docintel.server.stream")

# Marked in the connection's task when its stream drops a slow client; the
# logging filter below reads it (uvicorn logs from that task) to tell our
# deliberate drop from a bug.
_dropped: contextvars.ContextVar[bool] = contextvars.ContextVar("dropped", default=False)
INCOMPLETE = "ASGI callable returned without completing response."
NO_HANDSHAKE = "ASGI callable returned without completing handshake."


def drop_slow_client(scope: Scope, timeout: float) -> None:
    """Says that a stream's client is dropped for reading nothing for `timeout` s.

    The stream then returns without completing its response; uvicorn closes
    the connection and would report that as an application error, which the
    mark set here lets `QuietDeliberateDrops` silence.
    """
    client = scope.get("client") or ("?", 0)
    log.warning(
        "dropped stream client %s:%s: it read nothing for %g s", client[0], client[1], timeout
    )
    _dropped.set(True)


def refused_websocket() -> None:
    """Says that a WebSocket was refused before its upgrade, with an HTTP answer
    (a denial response): uvicorn's sans-I/O protocol reports that as a handshake
    the application never completed, which `QuietDeliberateDrops` silences."""
    _dropped.set(True)


class QuietDeliberateDrops(logging.Filter):
    """uvicorn reports a response we ended on purpose as an error; it is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg in (INCOMPLETE, NO_HANDSHAKE) and _dropped.get())


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
