"""GET /documents/stream: the event log, tailed over Server-Sent Events."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from docintel.core.errors import BadRequest
from docintel.core.events import Event
from docintel.server.auth import StreamSession
from docintel.server.deps import ServiceDep
from docintel.server.schemas import AmbiguousIdResponse, ErrorResponse, EventEncoder

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
    after = _parse_event_id(last_event_id_header or last_event_id)
    # Ids may be prefixes: the stream filters by the full ids they resolve to
    # (404 for unknown or foreign ones, 409 for ambiguous ones).
    user = session.username
    full_ids = [(await service.status(user, doc_id)).id for doc_id in document_id]
    # A stream ends a little before its token expires, so that the client can
    # still refresh the token (POST /auth/refresh) and resume from its last id.
    ttl = request.app.state.authenticator.ttl
    left = session.expires_at - time.time() - reauth_margin(ttl)
    # No cursor: from now on. The position is fixed here, so that the stream
    # can tell the client where it starts.
    position = service.feed.position if after is None else after
    return StreamRequest(user, position, full_ids, time.monotonic() + left, session.expires_at)


async def followed_events(
    request: Annotated[StreamRequest, Depends(stream_request)], service: ServiceDep
) -> AsyncIterator[AsyncGenerator[Event, None]]:
    """The event tail, closed when the request ends.

    fastapi.sse cancels its producer task on disconnect; when that lands while
    the producer waits to send, the endpoint's generator is left suspended at a
    `yield` and is only finalised by the garbage collector, holding its event
    subscription until then. Closing the tail here, when the request's exit
    stack unwinds, frees it at once.
    """
    events = service.follow(
        request.user, request.after, request.document_ids, until=request.reauth_at
    )
    try:
        yield events
    finally:
        with contextlib.suppress(RuntimeError):  # already running/closed: nothing to free
            await events.aclose()


@router.get(
    "/documents/stream",
    response_class=EventSourceResponse,
    responses={
        400: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
        409: {"model": AmbiguousIdResponse},
    },
)
async def stream(
    request: Request,
    start: Annotated[StreamRequest, Depends(stream_request)],
    events: Annotated[AsyncGenerator[Event, None], Depends(followed_events)],
) -> AsyncIterator[ServerSentEvent]:
    """Status events of your documents: replay after Last-Event-ID, then live.

    The first message carries no event, only `retry:` and an `id:` with the
    stream's starting position: a client that drops before any event arrived
    still reconnects with a cursor (browsers store it and send it back), so
    nothing committed in between is lost.
    """
    encode: EventEncoder = request.app.state.event_encoder
    yield ServerSentEvent(id=str(start.after), retry=request.app.state.settings.stream_retry_ms)
    last = start.after
    async for event in events:
        last = event.id
        yield ServerSentEvent(id=str(event.id), event="status", raw_data=encode(event))
    if time.monotonic() >= start.reauth_at:
        expiry = datetime.fromtimestamp(start.expires_at, UTC).isoformat().replace("+00:00", "Z")
        yield ServerSentEvent(
            id=str(last),
            event="reauth",
            raw_data=json.dumps({"reason": "token_expiring", "expires_at": expiry}),
        )


MAX_EVENT_ID = 2**63 - 1  # SQLite's INTEGER


def _parse_event_id(raw: str | None) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    # isascii: str.isdigit() also accepts '²', which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_EVENT_ID:
        raise BadRequest("Last-Event-ID must be an event id.", code="invalid_last_event_id")
    return int(raw)
