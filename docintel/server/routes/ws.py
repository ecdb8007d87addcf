"""GET /documents/ws: the event log, tailed over a WebSocket.

The same stream as GET /documents/stream, for clients that prefer a socket:
the same start (`begin_stream`: the token, `?last_event_id=`, `?document_id=`
prefixes, the end before the token expires), the same feed, and the same JSON.
Each text message is one object whose fields are the SSE message's fields:

    {"id": 0, "retry": 1000}                      first: where the stream starts
    {"id": 12, "event": "status", "data": {...}}  `data` is the SSE event's data
    {"id": 40, "event": "reauth", "data": {...}}  last, when the token expires

A refused request (no or bad token, bad id) is answered before the upgrade,
with the same HTTP status and error body as the SSE route. The server pings
(uvicorn's WebSocket ping, every 20 s) so idle connections stay open through
proxies; a client that takes no message for DOCINTEL_STREAM_SEND_TIMEOUT is
dropped, as an SSE client is, and resumes with `?last_event_id=`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from docintel.core.errors import DocintelError
from docintel.core.service import DocumentService
from docintel.server.auth import Authenticator, stream_session_of
from docintel.server.errors import error_response, headers_for, status_for
from docintel.server.routes.stream import StreamRequest, begin_stream, reauth_data
from docintel.server.streamguard import StreamSlots, refused_websocket

router = APIRouter(tags=["stream"])
log = logging.getLogger("docintel.server.stream")

# Application close codes (4000–4999): 4401 mirrors HTTP 401 (refresh the token).
CLOSE_REAUTH = 4401
CLOSE_GOING_AWAY = 1001  # the server is stopping
CLOSE_TOO_SLOW = 1008  # policy: the client read nothing for too long


@router.websocket("/documents/ws")
async def websocket_stream(websocket: WebSocket) -> None:
    """Status events of your documents over a WebSocket: replay, then live."""
    app = websocket.app
    service: DocumentService = app.state.service
    authenticator: Authenticator = app.state.authenticator
    slots: StreamSlots = app.state.stream_slots
    try:
        session = stream_session_of(websocket)
        # The same caps as the SSE stream: a WebSocket is a stream too.
        slots.acquire(session.username)
    except DocintelError as exc:
        await _refuse(websocket, exc)
        return
    try:
        try:
            start = await begin_stream(
                service,
                session,
                authenticator.ttl,
                websocket.query_params.getlist("document_id"),
                websocket.query_params.get("last_event_id"),
            )
        except DocintelError as exc:
            await _refuse(websocket, exc)
            return
        await _stream(websocket, service, start)
    finally:
        slots.release(session.username)


async def _refuse(websocket: WebSocket, exc: DocintelError) -> None:
    """Before the upgrade: the client gets an HTTP answer it can read."""
    response = error_response(status_for(exc), exc.code, exc.message, headers_for(exc), exc.details)
    await websocket.send_denial_response(response)
    refused_websocket()


async def _stream(websocket: WebSocket, service: DocumentService, start: StreamRequest) -> None:
    await websocket.accept()
    sending = asyncio.create_task(_send_events(websocket, service, start), name="docintel-ws-send")
    receiving = asyncio.create_task(_until_disconnect(websocket), name="docintel-ws-receive")
    try:
        await asyncio.wait((sending, receiving), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sending, receiving):
            task.cancel()
        await asyncio.gather(sending, receiving, return_exceptions=True)
    if sending.done() and not sending.cancelled() and sending.exception() is None:
        code = sending.result()
        with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
            await _within(websocket, websocket.close(code))


async def _send_events(websocket: WebSocket, service: DocumentService, start: StreamRequest) -> int:
    """Sends the stream; returns the close code once it ends by itself."""
    settings = websocket.app.state.settings
    if not await _send(websocket, f'{{"id":{start.after},"retry":{settings.stream_retry_ms}}}'):
        return CLOSE_TOO_SLOW
    last = start.after
    events = service.feed.follow(start.user, start.after, start.document_ids, until=start.reauth_at)
    try:
        async for batch in events:
            for event in batch:
                # `data` is the SSE event's JSON as it is, written once for every stream.
                text = f'{{"id":{event.id},"event":"status","data":{event.data}}}'
                if not await _send(websocket, text):
                    return CLOSE_TOO_SLOW
                last = event.id
    finally:
        await events.aclose()
    if time.monotonic() < start.reauth_at:
        return CLOSE_GOING_AWAY  # the feed ended first: the server is stopping
    reauth = f'{{"id":{last},"event":"reauth","data":{reauth_data(start)}}}'
    await _send(websocket, reauth)
    return CLOSE_REAUTH


async def _send(websocket: WebSocket, text: str) -> bool:
    """Sends one message; False if the client took nothing for the send timeout."""
    try:
        await _within(websocket, websocket.send_text(text))
    except TimeoutError:
        client = websocket.client
        log.warning(
            "dropped stream client %s:%s: it read nothing for %g s",
            client.host if client else "?",
            client.port if client else 0,
            websocket.app.state.settings.stream_send_timeout,
        )
        return False
    return True


async def _within(websocket: WebSocket, sending: Awaitable[None]) -> None:
    async with asyncio.timeout(websocket.app.state.settings.stream_send_timeout):
        await sending


async def _until_disconnect(websocket: WebSocket) -> None:
    """Reads (and ignores) what the client sends, until it goes away."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
