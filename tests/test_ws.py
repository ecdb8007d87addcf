"""GET /documents/ws: the SSE stream's events over a WebSocket, from the same feed.

A real WebSocket client (the `websockets` package) against the live server.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.conftest import (
    ServerProcess,
    open_streams,
    read_events,
    terminal_for,
    upload,
    wait_for,
    wait_terminal,
)

Until = Callable[[list[dict[str, Any]]], bool]


def ws_url(server: ServerProcess, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/documents/ws{query}"


def open_ws(server: ServerProcess, token: str | None, query: str = "") -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return connect(ws_url(server, query), additional_headers=headers, open_timeout=10)


def read_ws(ws: ClientConnection, until: Until, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The `status` messages, as read_events gives SSE events, until `until(events)`."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not until(events):
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if message.get("event") == "status":
            events.append(message)
    return events


def refusal(server: ServerProcess, token: str | None, query: str = "") -> tuple[int, dict]:
    with pytest.raises(InvalidStatus) as refused:
        open_ws(server, token, query).close()
    response = refused.value.response
    return response.status_code, json.loads(response.body or b"{}")


def test_the_same_events_as_the_sse_stream_live(offline_server: ServerProcess) -> None:
    token = offline_server.login()
    with offline_server.client() as alice, open_ws(offline_server, token) as ws:
        opening = json.loads(ws.recv(timeout=10))
        assert set(opening) == {"id", "retry"} and opening["retry"] > 0
        files = [
            (f"w{i}.txt", f"Document {i}. It says little. We must act.".encode()) for i in range(3)
        ]
        ids = [d["id"] for d in upload(alice, *files).json()["documents"]]
        over_ws = read_ws(ws, terminal_for(ids))
        wait_terminal(alice, ids)
    over_sse = read_events(
        offline_server, token, params={"last_event_id": opening["id"]}, until=terminal_for(ids)
    )
    # Same ids, same event names, same JSON: byte for byte the same data.
    assert [m for m in over_ws if m["data"]["document_id"] in ids] == [
        e for e in over_sse if e["data"]["document_id"] in ids
    ]
    statuses = [m["data"]["status"] for m in over_ws if m["data"]["document_id"] == ids[0]]
    assert statuses == ["pending", "processing", "analyzing", "completed"]
    assert over_ws[-1]["data"]["analysis"]["analyzer"] == "offline"


def test_resume_with_last_event_id_replays_exactly_what_followed(
    offline_server: ServerProcess,
) -> None:
    token = offline_server.login()
    with offline_server.client() as alice:
        ids = [d["id"] for d in upload(alice, ("r.txt", b"One. Two. Three.")).json()["documents"]]
        wait_terminal(alice, ids)
    everything = read_events(
        offline_server, token, params={"last_event_id": 0}, until=terminal_for(ids)
    )
    mine = [e for e in everything if e["data"]["document_id"] == ids[0]]
    cursor = mine[1]["id"]  # after `processing`
    with open_ws(offline_server, token, f"?last_event_id={cursor}&document_id={ids[0][:8]}") as ws:
        assert json.loads(ws.recv(timeout=10))["id"] == cursor
        resumed = read_ws(ws, lambda es: bool(es) and es[-1]["data"]["status"] == "completed")
    assert resumed == mine[2:]


def test_refused_before_the_upgrade_without_a_valid_token(offline_server: ServerProcess) -> None:
    status, body = refusal(offline_server, None)
    assert status == 401 and body["detail"]["code"] == "not_authenticated"
    status, body = refusal(offline_server, "not-a-token")
    assert status == 401 and body["detail"]["code"] == "invalid_token"
    # A token in the query works as it does for EventSource.
    token = offline_server.login()
    with connect(ws_url(offline_server, f"?access_token={token}"), open_timeout=10) as ws:
        assert "retry" in json.loads(ws.recv(timeout=10))
    status, body = refusal(offline_server, token, "?last_event_id=abc")
    assert status == 400 and body["detail"]["code"] == "invalid_last_event_id"
    # The access log redacts the token in a WebSocket's query as in a stream's.
    assert "/documents/ws?access_token=" in offline_server.log()
    assert token not in offline_server.log()
    # A refusal is an answer, not an application error in the log.
    assert "without completing handshake" not in offline_server.log()


def test_another_users_token_sees_nothing_of_alices(offline_server: ServerProcess) -> None:
    alice_token, bob_token = offline_server.login("alice"), offline_server.login("bob")
    with offline_server.client("alice") as alice:
        [doc] = upload(alice, ("secret.txt", b"Alice's plans. Nobody else's.")).json()["documents"]
        wait_terminal(alice, [doc["id"]])
    # Her document, named with bob's token: unknown to him, as on every route.
    status, body = refusal(offline_server, bob_token, f"?document_id={doc['id']}")
    assert status == 404 and body["detail"]["code"] == "not_found"
    with offline_server.client("bob") as bob:
        [own] = upload(bob, ("bob.txt", b"Bob's own. Short.")).json()["documents"]
        wait_terminal(bob, [own["id"]])
    with open_ws(offline_server, bob_token, "?last_event_id=0") as ws:
        seen = read_ws(ws, terminal_for([own["id"]]))
    assert {m["data"]["document_id"] for m in seen} <= {own["id"]} | _others_of(
        offline_server, "bob"
    )
    assert doc["id"] not in {m["data"]["document_id"] for m in seen}
    assert alice_token != bob_token


def _others_of(server: ServerProcess, user: str) -> set[str]:
    with server.client(user) as client:
        return {d["id"] for d in client.get("/documents", params={"limit": 100}).json()["items"]}


def test_a_dropped_socket_frees_its_subscription(offline_server: ServerProcess) -> None:
    token = offline_server.login()
    base = open_streams(offline_server)
    with open_ws(offline_server, token) as ws:
        ws.recv(timeout=10)
        assert wait_for(lambda: open_streams(offline_server) == base + 1)
        ws.socket.shutdown(socket.SHUT_RDWR)  # gone without a closing handshake
        assert wait_for(lambda: open_streams(offline_server) == base)


def test_the_stream_ends_with_reauth_before_the_token_expires(make_server) -> None:
    server: ServerProcess = make_server({"DOCINTEL_TOKEN_TTL": "4", "DOCINTEL_ANALYZER": "offline"})
    token = server.login()
    messages = []
    with open_ws(server, token) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                messages.append(json.loads(ws.recv(timeout=20)))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert messages[-1]["event"] == "reauth"
    assert messages[-1]["data"]["reason"] == "token_expiring"
    assert messages[-1]["id"] == messages[0]["id"]  # nothing happened in between


def test_stopping_the_server_closes_sockets_at_once(make_server) -> None:
    server: ServerProcess = make_server({"DOCINTEL_ANALYZER": "offline"})
    token = server.login()
    codes: list[int | None] = []
    ready = threading.Barrier(4)

    def hold() -> None:
        with open_ws(server, token) as ws:
            ws.recv(timeout=10)
            ready.wait(10)
            try:
                while True:
                    ws.recv(timeout=30)
            except ConnectionClosed as closed:
                codes.append(closed.rcvd.code if closed.rcvd else None)

    clients = [threading.Thread(target=hold) for _ in range(3)]
    for client in clients:
        client.start()
    ready.wait(10)
    assert server.stop(signal.SIGINT, timeout=15) in (0, 130)
    for client in clients:
        client.join(5)
    assert codes == [1001, 1001, 1001]


def test_a_client_that_stops_reading_slows_nobody(make_server) -> None:
    """Like a stalled SSE client: it holds its socket buffers, and no worker or reader waits."""
    server: ServerProcess = make_server(
        {"DOCINTEL_ANALYZER": "offline", "DOCINTEL_UPLOADS_PER_MINUTE": "1000"}
    )
    token = server.login()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", server.port))
    # A hand-made upgrade, then never another read.
    sock.sendall(
        (
            f"GET /documents/ws?last_event_id=0&access_token={token} HTTP/1.1\r\n"
            "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    try:
        text = " ".join(f"Team {i} must review budget line {i} this month." for i in range(40))
        with server.client() as alice, open_ws(server, token, "?last_event_id=0") as reader:
            ids = []
            for batch in range(4):
                files = [(f"s{batch}-{i}.txt", text.encode()) for i in range(20)]
                ids += [d["id"] for d in upload(alice, *files).json()["documents"]]
            seen = read_ws(reader, terminal_for(ids))
            wait_terminal(alice, ids)
        assert {m["data"]["document_id"] for m in seen} == set(ids)
        assert wait_for(lambda: open_streams(server) == 1)  # the stalled one, still connected
    finally:
        sock.close()
    assert wait_for(lambda: open_streams(server) == 0)


def test_websockets_and_sse_streams_share_the_per_user_cap(make_server) -> None:
    server: ServerProcess = make_server(
        {"DOCINTEL_ANALYZER": "offline", "DOCINTEL_MAX_STREAMS_PER_USER": "2"}
    )
    alice, bob = server.login("alice"), server.login("bob")
    with (
        httpx.stream(
            "GET", server.url + "/documents/stream", params={"access_token": alice}, timeout=30
        ) as sse,
        open_ws(server, alice) as ws,
    ):
        assert sse.status_code == 200
        ws.recv(timeout=10)
        status, body = refusal(server, alice)
        assert status == 429 and body["detail"]["code"] == "too_many_streams"
        with open_ws(server, bob) as other:  # the cap is alice's, not everyone's
            assert "retry" in json.loads(other.recv(timeout=10))
    # Both closed: her places are free again.
    assert wait_for(lambda: open_streams(server) == 0)
    with open_ws(server, alice) as again:
        assert "retry" in json.loads(again.recv(timeout=10))


def test_a_websocket_outlives_the_header_and_body_timeouts(make_server) -> None:
    """The upgrade ends the HTTP request: no request deadline may cut the socket later."""
    server: ServerProcess = make_server(
        {
            "DOCINTEL_ANALYZER": "offline",
            "DOCINTEL_HEADER_TIMEOUT": "1",
            "DOCINTEL_BODY_TIMEOUT": "1",
        }
    )
    token = server.login()
    with open_ws(server, token) as ws, server.client() as alice:
        ws.recv(timeout=10)
        time.sleep(3.5)  # several body timeouts
        [doc] = upload(alice, ("late.txt", b"Sent after a quiet while. Fine.")).json()["documents"]
        seen = read_ws(ws, terminal_for([doc["id"]]), timeout=30)
    assert [m["data"]["status"] for m in seen][-1] == "completed"
    assert "stalled" not in server.log()
