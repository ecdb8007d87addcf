"""GET /documents/stream: the event log, tailed over Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import StreamingResponse

from docintel.core.errors import BadRequest
from docintel.core.events import Event
from docintel.core.service import DocumentService
from docintel.server.auth import Session, StreamSession
from docintel.server.deps import ServiceDep
from docintel.server.openapi import (
    NOT_VALID,
    RETRY_AFTER,
    UNAUTHORIZED,
    WWW_AUTHENTICATE,
    Responses,
    json_error,
)
from docintel.server.schemas import EventEncoder
from docintel.server.streamguard import StreamSlots

router = APIRouter(tags=["stream"])


@dataclass(frozen=True)
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


async def stream_request(
    request: Request,
    session: StreamSession,
    service: ServiceDep,
    document_id: Annotated[
        list[str], Query(description="Only these documents (ids or unique prefixes of them).")
    ] = [],  # noqa: B006
    last_event_id: Annotated[
        str | None, Query(description="Replay events after this id (0: from the start).")
    ] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamRequest:
    # Checked here, in a dependency, because once the generator runs the
    # 200 and its headers are already sent.
    ttl = request.app.state.authenticator.ttl
    return await begin_stream(
        service, session, ttl, document_id, last_event_id_header or last_event_id
    )


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


async def stream_slot(request: Request, session: StreamSession) -> AsyncIterator[None]:
    """A place among the open streams (429 beyond the caps), held until the stream ends."""
    slots: StreamSlots = request.app.state.stream_slots
    slots.acquire(session.username)
    try:
        yield
    finally:
        slots.release(session.username)


async def followed_events(
    request: Annotated[StreamRequest, Depends(stream_request)], service: ServiceDep
) -> AsyncIterator[AsyncGenerator[Event, None]]:
    """The event tail, closed when the request ends.

    A response cancelled on disconnect while it waits to send leaves the
    generator it reads suspended at a `yield`, finalised only by the garbage
    collector, holding its event subscription until then. Closing the tail
    here, when the request's exit stack unwinds, frees it at once.
    """
    events = service.feed.follow(
        request.user, request.after, request.document_ids, until=request.reauth_at
    )
    try:
        yield events
    finally:
        with contextlib.suppress(RuntimeError):  # already running/closed: nothing to free
            await events.aclose()


async def stream_body(
    request: Request,
    start: Annotated[StreamRequest, Depends(stream_request)],
    events: Annotated[AsyncGenerator[Event, None], Depends(followed_events)],
) -> AsyncIterator[AsyncGenerator[bytes, None]]:
    """The response's bytes, closed when the request ends (before the tail it reads)."""
    settings = request.app.state.settings
    opening = f"id: {start.after}\nretry: {settings.stream_retry_ms}\n\n".encode()

    def closing(last: int) -> bytes | None:
        """`event: reauth` when the stream ends because its token is about to expire."""
        if time.monotonic() < start.reauth_at:
            return None  # the server is stopping
        return f"event: reauth\ndata: {reauth_data(start)}\nid: {last}\n\n".encode()

    body = sse_chunks(opening, start.after, events, request.app.state.event_encoder, closing)
    try:
        yield body
    finally:
        with contextlib.suppress(RuntimeError):  # already running/closed: nothing to free
            await body.aclose()


class EventStream(StreamingResponse):
    """`text/event-stream` written from bytes we frame ourselves (see `sse_chunks`).

    Not fastapi.sse's EventSourceResponse: FastAPI takes a route declaring that
    for a generator of single events and frames each one itself.
    """

    media_type = "text/event-stream"


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


@router.get(
    "/documents/stream",
    response_class=EventStream,
    # Resolved before the route's own dependencies: no subscription beyond the caps.
    dependencies=[Depends(stream_slot)],
    responses=STREAM_RESPONSES,
)
async def stream(
    body: Annotated[AsyncGenerator[bytes, None], Depends(stream_body)],
) -> EventStream:
    """Status events of your documents: replay after Last-Event-ID, then live.

    The first message carries no event, only `retry:` and an `id:` with the
    stream's starting position: a client that drops before any event arrived
    still reconnects with a cursor (browsers store it and send it back), so
    nothing committed in between is lost.
    """
    # No caching, and no buffering by proxies (nginx), as fastapi.sse sets.
    return EventStream(body, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


PING_INTERVAL = 15.0  # seconds without an event before a keep-alive comment
PING = b": ping\n\n"
CHUNK_EVENTS = 500  # at most this many events per write (one replay batch)


async def sse_chunks(
    opening: bytes,
    after: int,
    events: AsyncGenerator[Event, None],
    encode: EventEncoder,
    closing: Callable[[int], bytes | None],
) -> AsyncGenerator[bytes, None]:
    """The stream's bytes: every event that is ready goes out in one write.

    fastapi.sse makes one ASGI message, one socket write and a hop through two
    memory streams per event: a replay of 100k events spent most of its time
    there (py-spy: the socket write alone was a quarter of the server's time).
    Here a task pulls events into a buffer; the response takes the whole buffer
    at each turn, so a replay batch read in one query is one write, and a live
    event alone is written as soon as it arrives. The buffer is bounded: a
    client that reads slowly holds the puller back (its events wait in the log).
    When the events end, `closing(last event id)` may add a last message.
    """
    yield opening
    last = after
    buffer: list[bytes] = []
    arrived = asyncio.Event()  # puller → response: frames, or the end
    drained = asyncio.Event()  # response → puller: room again
    ended = False

    async def pull() -> None:
        nonlocal ended, last
        try:
            async for event in events:
                last = event.id
                frame = f"event: status\ndata: {encode(event)}\nid: {event.id}\n\n"
                buffer.append(frame.encode())
                arrived.set()
                if len(buffer) >= CHUNK_EVENTS:
                    drained.clear()
                    await drained.wait()
        finally:
            ended = True
            arrived.set()

    puller = asyncio.create_task(pull(), name="docintel-stream-pull")
    try:
        while True:
            if buffer:
                chunk = b"".join(buffer)
                buffer.clear()
                drained.set()
                yield chunk
                continue
            if ended:
                await puller  # its error, if any, ends the response as an error
                tail = closing(last)
                if tail is not None:
                    yield tail
                return
            arrived.clear()
            try:
                async with asyncio.timeout(PING_INTERVAL):
                    await arrived.wait()
            except TimeoutError:
                yield PING
    finally:
        puller.cancel()
        await asyncio.gather(puller, return_exceptions=True)


MAX_EVENT_ID = 2**63 - 1  # SQLite's INTEGER


def _parse_event_id(raw: str | None) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    # isascii: str.isdigit() also accepts '²', which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_EVENT_ID:
        raise BadRequest("Last-Event-ID must be an event id.", code="invalid_last_event_id")
    return int(raw)
