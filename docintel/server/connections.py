"""Connection-level limits: slow clients, too many connections, the descriptor limit.

uvicorn (0.54, h11) closes a keep-alive connection that stays idle between
requests (`timeout_keep_alive`) and caps a request head at 16 KB (h11), but it
arms no timer before a connection's first request, none while a request's
headers trickle in, and none while its body does: a client sending one byte a
second, or a `Content-Length` larger than what it sends, holds its connection
(and a file descriptor) for ever. Its `limit_concurrency` answers 503 only once
a request's headers are complete, so idle connections still pile up to the
descriptor limit, and then accept() fails for every client.

`LimitedH11Protocol` is uvicorn's own h11 protocol with three additions:

- a header deadline: a request's head must be complete within `header_timeout`
  seconds of its first byte (of the connection, for the first request);
- a body deadline: while a request body is arriving, the client may pause at
  most `body_timeout` seconds, and after its first `body_timeout` seconds the
  body must average `body_min_rate` bytes/s (Apache's mod_reqtimeout `MinRate`:
  an idle timeout alone never ends a body sent at one byte a second). Time
  during which *we* stopped reading (the app is behind) does not count;
- a cap on open connections: one beyond `max_connections` gets a 503 with
  `Retry-After`, in the API's error shape, and is closed. An HTTP answer rather
  than a bare close, because a client shows a 503 as "busy, try again" (the CLI
  prints its message) while a reset reads as a network fault.

A connection whose deadline passes is closed, with a 408 if it sent part of a
request and no response has started. A request whose head and body are
complete has no deadline while its response runs, so event streams are never
cut by these timeouts, but they do count as open connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from dataclasses import dataclass, field
from typing import ClassVar, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("docintel.server.connections")

# Descriptors kept for everything but client sockets: the database (and its
# WAL), files being uploaded, the children's pipes, logs, the listening socket
# and the event loop's own. An idle server holds 13; one with two workers busy
# on PDFs, 23.
FIXED_FDS = 64
# A refused connection is answered, then kept open this long (or until the
# client closes) so that its request is read and the answer is not lost to a
# reset; a few at a time (`FdBudget.lingering`): a new one closes the oldest.
LINGER = 1.0
RETRY_AFTER = 2  # seconds: connections free up as soon as requests end


@dataclass(frozen=True)
class FdBudget:
    """How the server's descriptors are shared out (see `fd_budget`)."""

    connections: int  # open connections at most
    backlog: int  # the listen backlog, which is also asyncio's accept batch
    lingering: int  # refused connections being answered at once


def fd_budget(setting: int, open_files: int) -> FdBudget:
    """Keep every descriptor the server may open inside its open-files limit.

    Beyond the fixed ones, at most half go to connections. The other half is
    for connections beyond the cap: those being answered (lingering), and those
    accepted but not yet refused. asyncio accepts up to `backlog` connections
    each time the listening socket is ready, and a protocol sees its connection
    (and can refuse it) two turns of the loop later, so up to three batches are
    open beyond the cap at once: with uvicorn's default backlog of 2048, 400 idle
    connections against a limit of 256 reached EMFILE in accept(). The price,
    only under a tight limit, is a small backlog: a burst of connections beyond
    it waits for the clients' SYN retry (1 s).
    """
    if open_files == resource.RLIM_INFINITY:
        return FdBudget(setting, 2048, 64)
    spare = max(0, open_files - FIXED_FDS)
    connections = max(1, min(setting, spare // 2))
    rest = spare - connections
    lingering = max(1, min(64, rest // 4))
    backlog = max(8, min(2048, (rest - lingering) // 3))
    return FdBudget(connections, backlog, lingering)


@dataclass
class ConnectionLimits:
    max_connections: int
    max_lingering: int
    header_timeout: float
    body_timeout: float
    body_min_rate: int
    # Refused connections being answered, oldest first.
    lingering: dict[LimitedH11Protocol, None] = field(default_factory=dict)


def raise_open_files_limit() -> tuple[int, int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit: (soft before, soft now, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft, soft, hard  # Linux refuses an infinite soft limit for open files
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft, hard
    return soft, hard, hard


def _answer(status: int, reason: str, code: str, message: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 error answer in the API's error shape, closing the connection.

    Written to the socket directly: no request reached the app (or none can
    finish), so server/errors.py's handlers never see these.
    """
    body = json.dumps({"detail": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n{extra}"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Tally:
    """Counts an event and logs the count at most every 10 s: an attack must not flood the log."""

    EVERY = 10.0

    def __init__(self, message: str) -> None:
        self.message = message
        self.count = 0
        self.logged_at = -self.EVERY
        self.flush_due: asyncio.TimerHandle | None = None

    def add(self) -> None:
        self.count += 1
        wait = self.logged_at + self.EVERY - time.monotonic()
        if wait <= 0:
            self.flush()
        elif self.flush_due is None:
            self.flush_due = asyncio.get_running_loop().call_later(wait, self.flush)

    def flush(self) -> None:
        self.flush_due = None
        if self.count:
            log.warning(self.message, self.count)
        self.count = 0
        self.logged_at = time.monotonic()


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines and a connection cap."""

    limits: ClassVar[ConnectionLimits]
    refused_tally: ClassVar[_Tally]
    header_tally: ClassVar[_Tally]
    body_tally: ClassVar[_Tally]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._timer: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # "headers" or "body" while a deadline runs
        self._head_bytes = 0
        self._body_started = 0.0
        self._body_bytes = 0
        self._refused = False

    # --- the connection cap -------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._refuse(transport)
            return
        super().connection_made(transport)
        self._start_headers()

    def _refuse(self, transport: asyncio.Transport) -> None:
        self._refused = True
        self.transport = transport
        self.refused_tally.add()
        lingering = self.limits.lingering
        if len(lingering) >= self.limits.max_lingering:
            # Make room by closing the oldest: its answer went out a while ago.
            oldest = next(iter(lingering))
            del lingering[oldest]
            oldest.transport.close()
        lingering[self] = None
        message = "The server has too many open connections; try again shortly."
        transport.write(
            _answer(
                503,
                "Service Unavailable",
                "too_many_connections",
                message,
                f"retry-after: {RETRY_AFTER}\r\n",
            )
        )
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = self.loop.call_later(LINGER, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            self.limits.lingering.pop(self, None)
            return
        super().connection_lost(exc)

    # --- deadlines ----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the request of a refused connection is read and dropped
        if self._phase is None and self.conn.their_state is h11.IDLE:
            self._start_headers()  # the next request on a kept-alive connection
        if self._phase == "headers":
            self._head_bytes += len(data)
        elif self._phase == "body":
            self._body_bytes += len(data)
        super().data_received(data)
        self._follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_request()  # a pipelined request may be mid-body already

    def _upgraded(self) -> bool:
        """The connection was handed to the WebSocket protocol: it is no longer ours."""
        return self.transport.get_protocol() is not self

    def _follow_request(self) -> None:
        """Set the deadline that fits where the request is now."""
        if self.transport.is_closing() or self._upgraded():
            # After an Upgrade, h11 still thinks the request's body is coming;
            # a deadline armed now would cut the WebSocket after body_timeout.
            self._disarm()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            return  # its head is incomplete: the header deadline stands
        if state is h11.SEND_BODY:
            if self._phase != "body":
                self._start_body()
            self._arm_body()
            return
        self._disarm()  # the request is complete; the response takes its time

    def _start_headers(self) -> None:
        self._disarm()
        self._phase = "headers"
        self._head_bytes = 0
        self._timer = self.loop.call_later(self.limits.header_timeout, self._expired)

    def _start_body(self) -> None:
        self._phase = "body"
        self._body_started = self.loop.time()
        self._body_bytes = 0

    def _arm_body(self) -> None:
        limits = self.limits
        now = self.loop.time()
        deadline = now + limits.body_timeout
        if limits.body_min_rate:
            allowed = limits.body_timeout + self._body_bytes / limits.body_min_rate
            deadline = min(deadline, self._body_started + allowed)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(deadline, self._expired)

    def _disarm(self) -> None:
        self._phase = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self._upgraded():
            return
        if self._phase == "body" and self.flow.read_paused:
            # We stopped reading (the app is behind), not the client: start afresh.
            self._start_body()
            self._arm_body()
            return
        if self._phase == "body":
            self.body_tally.add()
            message = (
                f"The request body stalled (no data for {self.limits.body_timeout:g} s, "
                f"or under {self.limits.body_min_rate} bytes/s)."
            )
        else:
            self.header_tally.add()
            message = f"The request headers did not arrive within {self.limits.header_timeout:g} s."
        silent = self._phase == "headers" and self._head_bytes == 0
        self._phase = None
        cycle = self.cycle
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        # No answer to a connection that never sent a byte: a browser's unused
        # pre-connection would read it as the answer to its next request.
        if not (silent or started):
            self.transport.write(_answer(408, "Request Timeout", "request_timeout", message))
        self.transport.close()  # the app's receive() then reports a disconnect


def limited_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """The protocol class for `uvicorn.Config(http=...)`, bound to these limits."""
    namespace = {
        "limits": limits,
        "refused_tally": _Tally("refused %d connection(s) beyond the connection cap"),
        "header_tally": _Tally("closed %d connection(s) whose request headers timed out"),
        "body_tally": _Tally("closed %d connection(s) whose request body stalled"),
    }
    return cast(type[H11Protocol], type("LimitedH11Protocol", (LimitedH11Protocol,), namespace))
