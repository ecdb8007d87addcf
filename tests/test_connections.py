"""Slow and greedy clients, reproduced with raw sockets against the live server.

Header and body deadlines, the connection cap (also under a low open-files
limit), and the caps on event streams per user and in total. Timeouts are set
to a second or two through the environment so that every attack ends quickly.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import PDFS, TXTS, ServerProcess, upload, wait_terminal

FAST = {"DOCINTEL_HEADER_TIMEOUT": "2", "DOCINTEL_BODY_TIMEOUT": "2"}
MARGIN = 8.0  # seconds beyond a timeout before a connection counts as "never closed"


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def drain_until_closed(
    socks: list[socket.socket],
    deadline: float,
    each_second: Callable[[socket.socket, int], None] | None = None,
) -> dict[socket.socket, bytes]:
    """Read every socket until the server closes it; `each_second(sock, n)` may send more.

    Returns what each one received. Fails if any is still open at `deadline`
    (time.monotonic()). A reset counts as closed.
    """
    received = {s: b"" for s in socks}
    selector = selectors.DefaultSelector()  # epoll: no limit on descriptor numbers
    for s in socks:
        selector.register(s, selectors.EVENT_READ)
    open_ = set(socks)
    tick = 0
    while open_ and time.monotonic() < deadline:
        if each_second is not None:
            for s in list(open_):
                try:
                    each_second(s, tick)
                except OSError:
                    pass  # closed by the server: its read below says so
        tick += 1
        second = time.monotonic() + 1
        while open_ and (left := min(second, deadline) - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if data:
                    received[s] += data
                else:
                    open_.discard(s)
                    selector.unregister(s)
    selector.close()
    assert not open_, f"{len(open_)} of {len(socks)} connections still open"
    return received


def status_of(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> dict[str, Any]:
    return json.loads(answer.partition(b"\r\n\r\n")[2])  # type: ignore[no-any-return]


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Sockets a test opens; all closed after it."""
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def test_headers_sent_one_byte_a_second_are_cut_off_at_the_header_timeout(
    make_server: Any, sockets: list[socket.socket]
) -> None:
    server = make_server(env=FAST)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
    sockets += [connect(server) for _ in range(200)]
    start = time.monotonic()

    def one_byte(s: socket.socket, n: int) -> None:
        s.send(request[n : n + 1])

    answers = drain_until_closed(sockets, start + 2 + MARGIN, one_byte)

    statuses = [status_of(a) for a in answers.values()]
    assert statuses.count(408) >= len(sockets) // 2  # the rest may see a reset
    assert set(statuses) <= {408, None}
    assert body_of(next(a for a in answers.values() if a))["detail"]["code"] == "request_timeout"
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_a_slow_body_and_a_short_body_are_cut_off(
    make_server: Any, sockets: list[socket.socket]
) -> None:
    server = make_server(env=FAST)
    head = (
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    # A body at one byte a second never pauses for the 2 s body timeout: only
    # the minimum rate (DOCINTEL_BODY_MIN_RATE, 500 bytes/s) ends it.
    slow = [connect(server) for _ in range(20)]
    # A Content-Length larger than what is sent: the rest never comes.
    short = [connect(server) for _ in range(20)]
    sockets += slow + short
    for s in slow:
        s.sendall(head)
    for s in short:
        s.sendall(head + b'{"username": "alice"')
    start = time.monotonic()

    def one_byte(s: socket.socket, n: int) -> None:
        if s in slow:
            s.send(b" ")

    answers = drain_until_closed(sockets, start + 2 + MARGIN, one_byte)

    for s in sockets:
        assert status_of(answers[s]) in (408, None), answers[s][:200]
    assert sum(status_of(answers[s]) == 408 for s in slow) >= len(slow) // 2
    assert sum(status_of(answers[s]) == 408 for s in short) >= len(short) // 2
    assert "stalled" in body_of(answers[short[0]])["detail"]["message"]
    # The server is fine, and the login route still works.
    assert server.login() != ""


def test_an_event_stream_outlives_the_header_and_body_timeouts(
    make_server: Any, sockets: list[socket.socket]
) -> None:
    server = make_server(env=FAST)
    stream = open_stream(server, server.login())
    sockets.append(stream.sock)
    assert stream.status == 200
    time.sleep(2 * 2 + 1)  # past both timeouts
    stream.sock.setblocking(False)
    with pytest.raises(BlockingIOError):  # no EOF, no reset: still open, waiting for events
        while True:
            assert stream.sock.recv(4096) != b"", "the server closed the stream"
    assert httpx.get(server.url + "/healthz").json()["streams"] == 1


def test_idle_connections_beyond_the_cap_are_refused_and_the_server_carries_on(
    make_server: Any, sockets: list[socket.socket]
) -> None:
    # A longer header timeout: the 20 let in must still hold every place when
    # the client below arrives, even on a slow machine.
    server = make_server(env={"DOCINTEL_HEADER_TIMEOUT": "4", "DOCINTEL_MAX_CONNECTIONS": "20"})
    assert "at most 20 connections" in server.log()
    sockets += [connect(server) for _ in range(100)]
    # While the 20 idle ones hold every place, a client gets a clear answer at once.
    busy = httpx.get(server.url + "/healthz", timeout=5)
    assert busy.status_code == 503
    assert busy.headers["Retry-After"] == "2"
    assert busy.json()["detail"]["code"] == "too_many_connections"

    answers = drain_until_closed(sockets, time.monotonic() + 4 + MARGIN)
    statuses = [status_of(a) for a in answers.values()]
    assert statuses.count(503) == 80  # refused at once
    # The ones let in, closed at the header timeout without an answer: they
    # sent nothing to answer.
    assert statuses.count(None) == 20

    assert httpx.get(server.url + "/healthz").status_code == 200
    with server.client() as alice:
        ids = [d["id"] for d in upload(alice, TXTS / "quarterly-memo.txt").json()["documents"]]
        assert wait_terminal(alice, ids)[ids[0]]["status"] == "completed"


def test_a_low_open_files_limit_holds_under_400_idle_connections(
    make_server: Any, sockets: list[socket.socket]
) -> None:
    server = make_server(env={**FAST, "DOCINTEL_WORKERS": "2"}, open_files=(128, 256))
    assert "open files limit raised from 128 to 256" in server.log()
    # Half of what the fixed needs leave; the rest for connections about to be refused.
    assert "at most 96 connections" in server.log()
    with server.client() as alice:
        files = [PDFS / "002-trivial-libre-office-writer.pdf", PDFS / "crazyones-pdfa.pdf"]
        files += [TXTS / "quarterly-memo.txt", TXTS / "accents-utf8.txt"] * 3
        ids = [d["id"] for d in upload(alice, *files).json()["documents"]]
        # Queued and in flight while 400 unauthenticated connections sit idle.
        for _ in range(400):
            sockets.append(connect(server))
            time.sleep(0.002)  # the server's backlog is small (32) at this limit
        answers = drain_until_closed(sockets, time.monotonic() + 2 + MARGIN)
        assert {status_of(a) for a in answers.values()} <= {408, 503, None}

        assert httpx.get(server.url + "/healthz").status_code == 200
        details = wait_terminal(alice, ids)
        assert {d["status"] for d in details.values()} == {"completed"}, details
    assert "Too many open files" not in server.log()


class Stream:
    def __init__(self, sock: socket.socket, answer: bytes) -> None:
        self.sock = sock
        self.answer = answer
        self.status = status_of(answer)


def open_stream(server: ServerProcess, token: str) -> Stream:
    """GET /documents/stream on a raw socket: the response head (and a refusal's body)."""
    sock = connect(server)
    sock.sendall(f"GET /documents/stream?access_token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        assert chunk, answer
        answer += chunk
    if status_of(answer) != 200:  # read the error body to its end
        head = answer.partition(b"\r\n\r\n")[0].decode().lower()
        length = int(head.split("content-length: ")[1].split("\r\n")[0])
        while len(answer.partition(b"\r\n\r\n")[2]) < length:
            answer += sock.recv(4096)
    return Stream(sock, answer)


def open_when_room(server: ServerProcess, token: str, timeout: float = 10.0) -> Stream:
    """Retry until there is room (the server frees it when it sees a client leave)."""
    deadline = time.monotonic() + timeout
    while True:
        stream = open_stream(server, token)
        if stream.status == 200 or time.monotonic() > deadline:
            return stream
        stream.sock.close()
        time.sleep(0.1)


def refused(stream: Stream) -> str:
    """The refusal's message, after checking it is a 429 with Retry-After."""
    assert stream.status == 429, stream.answer[:300]
    assert b"\r\nretry-after: 5\r\n" in stream.answer.lower()
    detail = body_of(stream.answer)["detail"]
    assert detail["code"] == "too_many_streams"
    return str(detail["message"])


def test_stream_caps_per_user_and_in_total(make_server: Any, sockets: list[socket.socket]) -> None:
    server = make_server(env={"DOCINTEL_MAX_STREAMS_PER_USER": "2", "DOCINTEL_MAX_STREAMS": "3"})
    alice, bob = server.login("alice"), server.login("bob")
    # Streams refused for other reasons take no place (nor keep one).
    for query in ("document_id=0000ffff", "last_event_id=x"):
        answer = httpx.get(f"{server.url}/documents/stream?access_token={alice}&{query}")
        assert answer.status_code in (400, 404)

    alice_streams = [open_stream(server, alice) for _ in range(2)]
    sockets += [s.sock for s in alice_streams]
    assert [s.status for s in alice_streams] == [200, 200]
    third = open_stream(server, alice)
    sockets.append(third.sock)
    assert "per user" in refused(third)

    # Another user still gets one: alice's streams cost only her own share.
    bob_stream = open_stream(server, bob)
    sockets.append(bob_stream.sock)
    assert bob_stream.status == 200
    # Now the server holds 3, its total: bob, under his own cap, is refused too.
    bob_second = open_stream(server, bob)
    sockets.append(bob_second.sock)
    assert "the server has 3" in refused(bob_second).lower()
    assert httpx.get(server.url + "/healthz").json()["streams"] == 3

    # A stream that ends frees its place, for its user and in the total.
    alice_streams[0].sock.close()
    again = open_when_room(server, alice)
    sockets.append(again.sock)
    assert again.status == 200
    bob_stream.sock.close()
    bob_again = open_when_room(server, bob)
    sockets.append(bob_again.sock)
    assert bob_again.status == 200


def test_event_streams_count_against_the_connection_cap(
    make_server: Any, sockets: list[socket.socket]
) -> None:
    server = make_server(env={"DOCINTEL_MAX_CONNECTIONS": "3"})
    token = server.login()
    streams = [open_when_room(server, token) for _ in range(3)]  # the login's may still close
    sockets += [s.sock for s in streams]
    assert [s.status for s in streams] == [200, 200, 200]
    assert httpx.get(server.url + "/healthz").status_code == 503
    streams[0].sock.close()
    deadline = time.monotonic() + 10
    while (status := httpx.get(server.url + "/healthz").status_code) != 200:
        assert status == 503 and time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.parametrize(
    "name",
    [
        "DOCINTEL_HEADER_TIMEOUT",
        "DOCINTEL_BODY_TIMEOUT",
        "DOCINTEL_MAX_CONNECTIONS",
        "DOCINTEL_MAX_STREAMS",
        "DOCINTEL_MAX_STREAMS_PER_USER",
    ],
)
def test_a_limit_of_zero_is_refused_at_start(name: str) -> None:
    from typer.testing import CliRunner

    from docintel.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--port", "1"], env={name: "0"})
    assert result.exit_code == 2
    assert name in result.stderr
