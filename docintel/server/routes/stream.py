"""GET /documents/stream: the event log, tailed over Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from docintel.core.config import Settings
from docintel.core.db import utcnow
from docintel.core.errors import BadRequest
from docintel.core.events import EventFeed
from docintel.core.service import DocumentService
from docintel.server.auth import Session, StreamSession, stream_session_of
from docintel.server.openapi import (
    NOT_VALID,
    RETRY_AFTER,
    UNAUTHORIZED,
    WWW_AUTHENTICATE,
    Responses,
    json_error,
)
from docintel.server.streamguard import StreamSlots, drop_slow_client


@dataclass(frozen=True, slots=True)  # slots: one per open stream
class StreamRequest:
    user: str
    after: int  # the stream sends events with ids above this
    document_ids: list[str]
    reauth_at: float  # time.monotonic() at which the stream ends with `event: reauth`
    expires_at: int  # the token's expiry (epoch seconds)


def reauth_margin(ttl: int) -> float:
    """How long before its token expires a stream ends: time enough to refresh it."""
    return min(30.0, ttl / 10)


def reauth_data(start: StreamRequest) -> str:
    """The data of the last message of a stream that ends because its token expires."""
    expiry = datetime.fromtimestamp(start.expires_at, UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"reason": "token_expiring", "expires_at": expiry})


async def begin_stream(
    service: DocumentService,
    session: Session,
    ttl: int,
    document_ids: list[str],
    last_event_id: str | None,
) -> StreamRequest:
    """Where a stream (SSE or WebSocket) starts, what it follows and until when.

    Raises (400, 404, 409) before anything is sent, so that a bad request gets
    a plain error response rather than a stream that ends at once.
    """
    after = _parse_event_id(last_event_id)
    # Ids may be prefixes: the stream filters by the full ids they resolve to
    # (404 for unknown or foreign ones, 409 for ambiguous ones).
    user = session.username
    full_ids = [(await service.status(user, doc_id)).id for doc_id in document_ids]
    # A stream ends a little before its token expires, so that the client can
    # still refresh the token (POST /auth/refresh) and resume from its last id.
    left = session.expires_at - time.time() - reauth_margin(ttl)
    # No cursor: from now on. The position is fixed here, so that the stream
    # can tell the client where it starts.
    position = service.feed.position if after is None else after
    return StreamRequest(user, position, full_ids, time.monotonic() + left, session.expires_at)


# The OpenAPI shape of a stream, as fastapi.sse documents it.
SSE_ITEM_SCHEMA = {
    "type": "object",
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


# The errors are JSON, answered before the stream starts (see json_error).
STREAM_RESPONSES: Responses = {
    200: {
        "description": "The event stream: a first message with `id:` and `retry:`, then events.",
        "content": {"text/event-stream": {"itemSchema": SSE_ITEM_SCHEMA}},
    },
    400: json_error("A Last-Event-ID that is no event id, or a too-short document id prefix."),
    401: json_error(UNAUTHORIZED, headers=WWW_AUTHENTICATE),
    404: json_error("No document of yours has one of these ids (`not_found`)."),
    409: json_error("A document id prefix is ambiguous.", schema="AmbiguousIdResponse"),
    422: json_error(NOT_VALID),
    429: json_error(
        "Too many open streams: try again after `Retry-After` seconds.", headers=RETRY_AFTER
    ),
}


#: (owner, full ids) → those of them deleted since: `DocumentService.missing`
Missing = Callable[[str, list[str]], Awaitable[list[str]]]
PING_INTERVAL = 15.0  # seconds without an event before a keep-alive comment
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    # No caching, and no buffering by proxies (nginx), as fastapi.sse sets.
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
PING = b": ping\n\n"


class EventStream(Response):
    """`text/event-stream`: the feed's batches, each written to the socket at once.

    Not a StreamingResponse: that one runs a task group, a second task that
    waits for the disconnect and an iterator per stream, and with FastAPI's
    dependencies with `yield` around it an idle stream held ~60 KB; a fan-out
    to 1,000 streams paid for each of those layers per event. Here one task
    per stream writes every batch the feed hands it (a replay's read of 500
    events, or whatever arrived live since its last write) as one message,
    and a small listener notices the client leaving.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        start: StreamRequest,
        feed: EventFeed,
        slots: StreamSlots,
        settings: Settings,
        missing: Missing,
    ) -> None:
        # Not Response.__init__: it would declare an empty body (Content-Length: 0),
        # and encode the same three headers again for every stream.
        self.status_code = 200
        self.background = None
        self.raw_headers = list(STREAM_HEADERS)  # the tuples shared, the list its own
        self.start = start
        self.feed = feed
        self.slots = slots
        self.missing = missing
        self.retry_ms = settings.stream_retry_ms
        self.send_timeout = settings.stream_send_timeout
        # The running stream's state: attributes, not closures' cells, which
        # cost more per stream (kept for as long as it is open).
        self._task: asyncio.Task[Any] | None = None
        self._why: str | None = None  # why the stream cancelled its own task: "gone" or "slow"
        self._sending_since: float | None = None  # loop time at which the pending send began
        self._watchdog: asyncio.TimerHandle | None = None
        self._ended = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One frame for the whole stream (no helper coroutine): it lives as
        # long as the stream, thousands of times over.
        start = self.start
        loop = asyncio.get_running_loop()
        task = self._task = asyncio.current_task()
        assert task is not None
        # Taken here, not in a dependency: nothing can fail between taking
        # the slot and the `finally` that gives it back. Raised before the
        # response starts, so it is a plain 429.
        self.slots.acquire(start.user)
        listener = asyncio.create_task(
            self._until_disconnect(receive), name="docintel-stream-disconnect"
        )
        self._watchdog = loop.call_later(self.send_timeout, self._watch)
        events = self.feed.follow(
            start.user, start.after, start.document_ids, until=start.reauth_at, idle=PING_INTERVAL
        )
        try:
            self._sending_since = loop.time()
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            # Built in the call, not kept in a local this frame holds for hours.
            await send(_body(f"id: {start.after}\nretry: {self.retry_ms}\n\n".encode()))
            self._sending_since = None
            last = start.after
            following = start.document_ids  # those not yet found deleted
            async for batch in events:
                if batch:
                    last = batch[-1].id
                    chunk = "".join(
                        [f"event: status\ndata: {e.data}\nid: {e.id}\n\n" for e in batch]
                    ).encode()
                elif following:
                    # Quiet: were any of them deleted? A deletion writes no event.
                    gone = await self.missing(start.user, following)
                    following = [i for i in following if i not in gone]
                    chunk = PING + b"".join([_deleted(i) for i in gone])
                else:
                    chunk = PING
                self._sending_since = loop.time()
                await send(_body(chunk))
                self._sending_since = None
            await send(_body(self._closing(last), more=False))
        except asyncio.CancelledError:
            if self._why is None or task.uncancel() > 0:
                raise  # not ours: the server is stopping
            if self._why == "slow":
                # Returns without completing the response: uvicorn closes the
                # connection; the client can resume with Last-Event-ID.
                drop_slow_client(scope, self.send_timeout)
        finally:
            self._ended = True
            listener.cancel()
            self._watchdog.cancel()
            await events.aclose()
            self.slots.release(start.user)

    def _interrupt(self, reason: str) -> None:
        if not self._ended and self._why is None and self._task is not None:
            self._why = reason
            self._task.cancel()

    async def _until_disconnect(self, receive: Receive) -> None:
        # uvicorn's send() to a client that left returns quietly: only
        # receive() tells, and only while someone waits in it.
        while (await receive())["type"] != "http.disconnect":
            pass
        self._interrupt("gone")

    def _watch(self) -> None:
        # One timer per stream, re-armed, rather than a timeout around every
        # send (which cost as much as the send itself).
        since = self._sending_since
        loop = asyncio.get_running_loop()
        blocked = 0.0 if since is None else loop.time() - since
        if blocked >= self.send_timeout:
            self._interrupt("slow")
        else:
            self._watchdog = loop.call_later(self.send_timeout - blocked, self._watch)

    def _closing(self, last: int) -> bytes:
        """`event: reauth` when the stream ends because its token is about to expire."""
        if time.monotonic() < self.start.reauth_at:
            return b""  # the server is stopping
        return f"event: reauth\ndata: {reauth_data(self.start)}\nid: {last}\n\n".encode()


def _deleted(document_id: str) -> bytes:
    """`event: deleted`, no id: the client's position in the log stays where it
    was. Its data has a status event's fields, for clients that read only data."""
    data = {
        "document_id": document_id,
        "status": "deleted",
        "timestamp": utcnow(),
        "filename": None,
        "error": "The document was deleted.",
    }
    return f"event: deleted\ndata: {json.dumps(data)}\n\n".encode()


def _body(chunk: bytes, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": more}


async def open_stream(connection: HTTPConnection) -> EventStream:
    """The stream a request asks for, checked before anything is sent: 401, 400,
    404 or 409 are plain error responses rather than a stream that ends at once."""
    state = connection.app.state
    query = connection.query_params
    start = await begin_stream(
        state.service,
        stream_session_of(connection),
        state.authenticator.ttl,
        query.getlist("document_id"),
        connection.headers.get("last-event-id") or query.get("last_event_id"),
    )
    service = state.service
    return EventStream(start, service.feed, state.stream_slots, state.settings, service.missing)


class StreamRoute(APIRoute):
    """Documented from its endpoint like any route; a GET is served as plain ASGI.

    FastAPI's per-request machinery (exit stacks, the solved dependencies, two
    exception-handling layers) stays alive as long as the response runs, which
    for a stream is hours: about a third of an idle stream's memory. The
    stream needs none of it: `open_stream` reads what the endpoint's
    parameters declare, and errors raised there still reach the app's handlers.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            await super().handle(scope, receive, send)  # 405, as for any route
            return
        response = await open_stream(HTTPConnection(scope))
        await response(scope, receive, send)


router = APIRouter(tags=["stream"], route_class=StreamRoute)


# status_code: FastAPI reads the default from the response class's __init__ otherwise.
@router.get(
    "/documents/stream", response_class=EventStream, status_code=200, responses=STREAM_RESPONSES
)
async def stream(
    request: Request,
    session: StreamSession,
    document_id: Annotated[
        list[str], Query(description="Only these documents (ids or unique prefixes of them).")
    ] = [],  # noqa: B006
    last_event_id: Annotated[
        str | None, Query(description="Replay events after this id (0: from the start).")
    ] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventStream:
    """Status events of your documents: replay after Last-Event-ID, then live.

    The first message carries no event, only `retry:` and an `id:` with the
    stream's starting position: a client that drops before any event arrived
    still reconnects with a cursor (browsers store it and send it back), so
    nothing committed in between is lost.
    """
    # StreamRoute serves a GET through open_stream without calling this; the
    # parameters above are what it reads, declared for the schema.
    return await open_stream(request)


MAX_EVENT_ID = 2**63 - 1  # SQLite's INTEGER


def _parse_event_id(raw: str | None) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    # isascii: str.isdigit() also accepts '²', which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_EVENT_ID:
        raise BadRequest("Last-Event-ID must be an event id.", code="invalid_last_event_id")
    return int(raw)
