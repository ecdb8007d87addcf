"""Stream lifecycle: dropped clients are freed, and shutdown never waits on open streams."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from docintel.core.config import Settings
from docintel.core.db import Database
from docintel.core.events import EventFeed
from docintel.server.routes.stream import EventStream, StreamRequest
from docintel.server.streamguard import INCOMPLETE, QuietDeliberateDrops, StreamSlots
from tests.conftest import ServerProcess, open_streams, read_events, upload, wait_for, wait_terminal


def test_a_dropped_client_frees_its_subscription(offline_server: ServerProcess) -> None:
    token = offline_server.login()
    base = open_streams(offline_server)
    with httpx.stream(
        "GET",
        offline_server.url + "/documents/stream",
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        assert response.status_code == 200
        assert wait_for(lambda: open_streams(offline_server) == base + 1)
    assert wait_for(lambda: open_streams(offline_server) == base)


def test_bad_last_event_id_is_a_400_before_streaming(offline_server: ServerProcess) -> None:
    token = offline_server.login()
    response = httpx.get(
        offline_server.url + "/documents/stream",
        headers={"Authorization": f"Bearer {token}", "Last-Event-ID": "abc"},
    )
    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "invalid_last_event_id"


def test_ctrl_c_with_open_streams_ends_them_and_exits(make_server) -> None:
    server: ServerProcess = make_server({"DOCINTEL_ANALYZER": "offline"})
    token = server.login()
    ended: list[str] = []

    def hold_stream() -> None:
        with httpx.stream(
            "GET",
            server.url + "/documents/stream",
            params={"access_token": token},
            timeout=httpx.Timeout(5, read=None),
        ) as response:
            for _ in response.iter_lines():
                pass
        ended.append("closed by the server")

    clients = [threading.Thread(target=hold_stream) for _ in range(3)]
    for client in clients:
        client.start()
    assert wait_for(lambda: open_streams(server) == 3)
    # A hang here would be uvicorn waiting forever on the streams; the bound is
    # generous and only there to turn a hang into a failure.
    assert server.stop(signal.SIGINT, timeout=15) in (
        0,
        130,
    )  # 130: the shell convention for Ctrl-C
    for client in clients:
        client.join(5)
    assert ended == ["closed by the server"] * 3
    assert "Application shutdown complete" in server.log()


def _open_stream_socket(server: ServerProcess, token: str, query: str = "", rcvbuf: int = 0):
    import socket

    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(
        f"GET /documents/stream?access_token={token}{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    return sock


def test_stream_churn_leaves_no_subscriptions_or_tasks_behind(
    offline_server: ServerProcess,
) -> None:
    token = offline_server.login()
    health = lambda: httpx.get(offline_server.url + "/healthz").json()  # noqa: E731
    before = health()
    rss_before = offline_server.rss_kb()
    for _ in range(2000):
        sock = _open_stream_socket(offline_server, token)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")
        sock.close()
    assert wait_for(lambda: health()["streams"] == before["streams"] == 0)
    assert wait_for(lambda: health()["tasks"] <= before["tasks"])
    print(
        f"\nstream churn: 2000 cycles, server RSS {rss_before} kB -> {offline_server.rss_kb()} kB"
    )


def test_a_client_that_stops_reading_slows_nobody(make_server) -> None:
    """A stalled reader holds only its socket buffers; workers and other readers carry on."""
    from tests.conftest import read_events, terminal_for, upload

    server: ServerProcess = make_server(
        {"DOCINTEL_ANALYZER": "offline", "DOCINTEL_UPLOADS_PER_MINUTE": "1000"}
    )
    token = server.login()
    text = " ".join(
        f"Team {i} must review budget line {i} before the end of this month." for i in range(12)
    )
    stalled = _open_stream_socket(server, token, "&last_event_id=0", rcvbuf=2048)
    try:
        with server.client() as alice:
            ids = []
            for batch in range(4):
                files = [(f"b{batch}-{i}.txt", text.encode()) for i in range(20)]
                ids += [d["id"] for d in upload(alice, *files).json()["documents"]]
            events = read_events(
                server, token, params={"last_event_id": 0}, until=terminal_for(ids)
            )
        completed = {e["data"]["document_id"] for e in events if e["data"]["status"] == "completed"}
        assert completed == set(ids)
        assert open_streams(server) == 1  # the stalled one, still connected, costing no worker time
    finally:
        stalled.close()
    assert wait_for(lambda: open_streams(server) == 0)


@contextlib.asynccontextmanager
async def asgi_stream(tmp_path: Path, send_timeout: float = 5.0) -> AsyncIterator[Any]:
    """alice's stream response on a real database and feed, to call through ASGI."""
    db = Database(tmp_path / "docintel.db")
    await db.open()
    feed = EventFeed(db)
    await feed.start()
    slots = StreamSlots(per_user=1, total=10)
    settings = Settings.from_env({}, data_dir=tmp_path, stream_send_timeout=send_timeout)
    start = StreamRequest("alice", 0, [], time.monotonic() + 3600, int(time.time()) + 3600)

    async def missing(owner: str, ids: list[str]) -> list[str]:
        raise AssertionError("a stream that follows no document asks nothing")

    try:
        yield EventStream(start, feed, slots, settings, missing)
    finally:
        # Whatever way the stream ended, it freed its slot and its subscription.
        assert (slots.open, feed.open_streams) == (0, 0)
        await feed.stop()
        await db.close()


SCOPE = {"type": "http", "path": "/documents/stream", "client": ("127.0.0.1", 5)}


def test_a_stream_drops_a_client_whose_sends_block(caplog, tmp_path: Path) -> None:
    """A send that never completes ends the stream, quietly.

    Through a server this cannot be reproduced quickly: loopback socket buffers
    take every event a test can produce before a send would block.
    """
    sent: list[str] = []

    async def client_receive() -> None:
        await asyncio.sleep(3600)  # the client never says anything

    async def stuck_send(message) -> None:
        sent.append(message["type"])
        if message["type"] == "http.response.body":
            await asyncio.sleep(3600)  # flow control: the client stopped reading

    async def run() -> bool:
        async with asgi_stream(tmp_path, send_timeout=0.2) as response:
            with caplog.at_level(logging.WARNING, logger="docintel.server.stream"):
                async with asyncio.timeout(5):
                    await response(SCOPE, client_receive, stuck_send)
        # Read in the response's task, as uvicorn's "incomplete response" line is.
        record = logging.LogRecord("uvicorn.error", logging.ERROR, "", 0, INCOMPLETE, None, None)
        return QuietDeliberateDrops().filter(record)

    assert asyncio.run(run()) is False  # uvicorn's "incomplete response" line is silenced
    assert sent == ["http.response.start", "http.response.body"]
    assert "dropped stream client 127.0.0.1:5" in caplog.text


def test_a_stream_ends_when_its_client_leaves_and_passes_on_other_cancellations(
    tmp_path: Path,
) -> None:
    """The stream's listener ends it by cancelling its task when the client leaves
    (it returns normally); anyone else's cancel (a server stopping) still lands."""
    sent: list[bytes] = []

    async def send(message) -> None:
        sent.append(message.get("body", b""))

    async def run() -> None:
        leave = asyncio.Event()

        async def client_receive() -> dict[str, Any]:
            await leave.wait()
            return {"type": "http.disconnect"}

        async with asgi_stream(tmp_path) as response:
            task = asyncio.ensure_future(response(SCOPE, client_receive, send))
            await asyncio.sleep(0.05)
            leave.set()
            await asyncio.wait_for(task, 5)  # returned, not cancelled
        assert sent[1].startswith(b"id: 0\nretry: ")

        async with asgi_stream(tmp_path) as response:
            task = asyncio.ensure_future(response(SCOPE, lambda: asyncio.sleep(3600), send))
            await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert task.cancelled()

    asyncio.run(run())


def test_disconnecting_mid_replay_logs_no_error(offline_server: ServerProcess) -> None:
    """Clients that leave mid-replay end their streams quietly, and free them."""
    from tests.conftest import upload, wait_terminal

    with offline_server.client() as alice:
        ids = [
            d["id"]
            for d in upload(
                alice, *((f"r{i}.txt", b"Replay me. Twice.") for i in range(20))
            ).json()["documents"]
        ]
        wait_terminal(alice, ids)
        token = alice.headers["Authorization"].split()[1]
    for _ in range(100):
        sock = _open_stream_socket(offline_server, token, "&last_event_id=0")
        sock.recv(1024)
        sock.close()
    assert wait_for(lambda: open_streams(offline_server) == 0)
    assert "Exception in ASGI application" not in offline_server.log()


def first_message(server: ServerProcess, token: str, **params: str) -> list[str]:
    """The lines of the stream's first message (up to its blank line)."""
    lines: list[str] = []
    with httpx.stream(
        "GET", server.url + "/documents/stream", params={"access_token": token, **params}
    ) as response:
        for line in response.iter_lines():
            if not line:
                break
            lines.append(line)
    return lines


def test_a_stream_starts_with_retry_and_its_position(offline_server: ServerProcess) -> None:
    """No client is ever without a cursor, even one that drops before any event."""
    with offline_server.client() as alice:
        token = alice.headers["Authorization"].split()[1]
        [doc] = upload(alice, ("before.txt", b"Text before the stream. More.")).json()["documents"]
        wait_terminal(alice, [doc["id"]])
        # A fresh stream says where it starts (the end of the log) at once.
        opening = first_message(offline_server, token)
        assert "retry: 1000" in opening
        [position] = [int(line[4:]) for line in opening if line.startswith("id: ")]
        history = [e["id"] for e in read_events(
            offline_server, token, params={"last_event_id": 0}, until=lambda es: len(es) >= 4
        )]  # fmt: skip
        assert position >= max(history)
        # Dropped before any event: what is committed in the gap comes on reconnect.
        [gap] = upload(alice, ("gap.txt", b"Text in the gap. More.")).json()["documents"]
        wait_terminal(alice, [gap["id"]])
    missed = read_events(
        offline_server, token, headers={"Last-Event-ID": str(position)},
        until=lambda es: es[-1]["data"]["status"] == "completed",
    )  # fmt: skip
    assert [e["data"]["document_id"] for e in missed] == [gap["id"]] * 4
    # With a cursor, the first message repeats it.
    assert f"id: {position}" in first_message(offline_server, token, last_event_id=str(position))


def test_a_stream_ends_with_reauth_before_its_token_expires(make_server) -> None:
    """The last event says why; the client refreshes and resumes with nothing lost."""
    server: ServerProcess = make_server({"DOCINTEL_TOKEN_TTL": "4"})
    token = server.login()
    messages: list[tuple[str, str, str]] = []  # (event, id, data)
    with httpx.stream(
        "GET", server.url + "/documents/stream", params={"access_token": token}, timeout=30
    ) as response:
        event = ident = data = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("data: "):
                data = line[6:]
            elif not line and (event or data):
                messages.append((event, ident, data))
                event = data = ""
    # The server ended the stream by itself, with one last event saying why.
    assert messages[-1][0] == "reauth", messages
    reason = json.loads(messages[-1][2])
    assert reason["reason"] == "token_expiring" and reason["expires_at"].endswith("Z")
    position = messages[-1][1]
    # Time is left to refresh the token, and to resume from the last id.
    fresh = httpx.post(server.url + "/auth/refresh", headers={"Authorization": f"Bearer {token}"})
    assert fresh.status_code == 200
    new_token = fresh.json()["access_token"]
    alice = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {new_token}"})
    with alice:
        [doc] = upload(alice, ("after.txt", b"Uploaded after the stream ended. More.")).json()[
            "documents"
        ]
        wait_terminal(alice, [doc["id"]])
    missed = read_events(
        server, new_token, headers={"Last-Event-ID": position},
        until=lambda es: es[-1]["data"]["status"] == "completed",
    )  # fmt: skip
    assert [e["data"]["document_id"] for e in missed] == [doc["id"]] * 4


def test_a_list_and_a_detail_say_which_event_they_reflect(offline_server: ServerProcess) -> None:
    with offline_server.client() as alice:
        token = alice.headers["Authorization"].split()[1]
        [first] = upload(alice, ("first.txt", b"The first document. More.")).json()["documents"]
        wait_terminal(alice, [first["id"]])
        listed = alice.get("/documents")
        position = int(listed.headers["X-Last-Event-ID"])
        assert listed.json()["last_event_id"] == position
        detail = alice.get(f"/documents/{first['id']}")
        assert int(detail.headers["X-Last-Event-ID"]) == position  # nothing happened since
        [second] = upload(alice, ("second.txt", b"The second document. More.")).json()["documents"]
        wait_terminal(alice, [second["id"]])
    after = read_events(
        offline_server, token, params={"last_event_id": position},
        until=lambda es: es[-1]["data"]["status"] == "completed",
    )  # fmt: skip
    # Exactly what changed after the list: the second document's four steps.
    assert [(e["data"]["document_id"], e["data"]["status"]) for e in after] == [
        (second["id"], s) for s in ("pending", "processing", "analyzing", "completed")
    ]
