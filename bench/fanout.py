"""Fan-out: commit → client latency with many open streams, against one stream.

Baseline: one SSE client while documents run, in the same run. Load: USERS ×
STREAMS clients (each user's streams all open) while the same number of
documents per user run. Every client checks it received exactly its user's
events, in order, none twice.

Then a document's trip (upload → `completed` on its owner's stream), one at a
time, with 10,000 idle streams of another user open, against the same trips
with none open before and after (fewer idle streams if the file-descriptor
limit cannot be raised: the figure says how many). The model is the fake OpenAI server (answers in
under a millisecond, TCP_NODELAY), so the figures are the pipeline's own.

    python -m bench fanout [--tiny]
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from bench._common import percentile, start_server
from tests.conftest import ServerProcess, upload, wait_terminal
from tests.fake_openai import FakeOpenAI


@dataclass
class Client:
    user: str
    ids: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    events: int = 0  # counted as they arrive; ids and latencies are read afterwards
    arrivals: list[tuple[float, bytes]] = field(default_factory=list)
    pending: bytes = b""  # the start of a line still arriving

    def received(self, at: float, data: bytes) -> None:
        """Keeps whole lines with their arrival time (a read may end mid-line)."""
        self.pending += data
        cut = self.pending.rfind(b"\n") + 1
        if cut:
            self.arrivals.append((at, self.pending[:cut]))
            self.events += self.pending.count(b"event: status", 0, cut)
            self.pending = self.pending[cut:]

    def parse(self) -> None:
        """Ids and commit → arrival latencies from the recorded reads.

        The reads are stamped as they arrive and parsed after the run: 1,000
        clients in one Python process parsing JSON as events come would queue
        behind each other, and that wait is the client's, not the server's.
        """
        event_id = None
        for at, lines in self.arrivals:
            for line in lines.decode().split("\n"):
                if line.startswith("id:"):
                    event_id = int(line[3:])
                elif line.startswith("data:") and event_id is not None:
                    stamp = json.loads(line[5:])["timestamp"].replace("Z", "+00:00")
                    self.latencies.append((at - datetime.fromisoformat(stamp).timestamp()) * 1000)
                    self.ids.append(event_id)


def connect(server: ServerProcess, token: str, client: Client) -> socket.socket:
    """An open stream, its response head read; what came after the head is kept."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"GET /documents/stream?access_token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(1 << 16)
        assert chunk, "the stream closed before its head"
        received += chunk
    head, client.pending = received.split(b"\r\n\r\n", 1)
    assert head.split()[1] == b"200", head[:200]
    sock.setblocking(False)
    return sock


def listen(streams: dict[socket.socket, Client], stop: threading.Event) -> None:
    """Reads every stream as data arrives, in one thread with a plain selector.

    Not asyncio: with 1,000 streams the client's own per-read overhead (a
    task step and a StreamReader per read) competed with the server for the
    machine's two cores and showed up in the latencies.
    """
    with selectors.DefaultSelector() as selector:
        for sock, client in streams.items():
            selector.register(sock, selectors.EVENT_READ, client)
        while not stop.is_set():
            for key, _ in selector.select(0.05):
                data = key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
                if data:
                    key.data.received(time.time(), data)
                else:
                    selector.unregister(key.fileobj)


def tokens(server: ServerProcess, users: list[str]) -> dict[str, str]:
    return {u: server.login(u, f"{u}-pw") for u in users}


def run_phase(
    server: ServerProcess, users: list[str], streams: int, documents: int
) -> list[Client]:
    tok = tokens(server, users)
    clients = [Client(u) for u in users for _ in range(streams)]
    socks = {connect(server, tok[c.user], c): c for c in clients}
    stop = threading.Event()
    reader = threading.Thread(target=listen, args=(socks, stop), daemon=True)
    reader.start()
    try:
        expected = send_documents(server, tok, documents)
        deadline = time.monotonic() + 300
        while any(c.events < expected[c.user] for c in clients):
            assert time.monotonic() < deadline, "events missing"
            time.sleep(0.05)
    finally:
        stop.set()
        reader.join()
        for sock in socks:
            sock.close()
    for c in clients:
        c.parse()
        assert len(c.ids) == expected[c.user] and c.ids == sorted(set(c.ids)), c.user
    return clients


def send_documents(server: ServerProcess, tok: dict[str, str], per_user: int) -> dict[str, int]:
    """Upload per_user small documents for each user, wait until all end: events per user."""
    uploaded: dict[str, list[str]] = {}
    for user, token in tok.items():
        with api_for(server, token) as api:
            uploaded[user] = []
            for start in range(0, per_user, 20):
                files = [
                    (f"d{i}.txt", b"Please send the figures by Friday. Sales grew.")
                    for i in range(start, min(per_user, start + 20))
                ]
                uploaded[user] += [d["id"] for d in upload(api, *files).json()["documents"]]
    expected = {}
    for user, token in tok.items():
        with api_for(server, token) as api:
            details = wait_terminal(api, uploaded[user], timeout=300)
            expected[user] = sum(len(d["history"]) for d in details.values())
    return expected


def api_for(server: ServerProcess, token: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def trips(server: ServerProcess, token: str, count: int) -> list[float]:
    """Milliseconds from each upload's request to its `completed` event, one at a time."""
    client = Client("user0")
    sock = connect(server, token, client)
    sock.setblocking(True)
    out = []
    try:
        with api_for(server, token) as api:
            for i in range(count):
                start = time.perf_counter()
                [doc] = upload(api, (f"t{i}.txt", b"Sales grew. Send the figures.")).json()[
                    "documents"
                ]
                done = f'"document_id":"{doc["id"]}","status":"completed"'.encode()
                while done not in client.pending:  # the stream's bytes since it opened
                    client.pending += sock.recv(1 << 16)
                out.append((time.perf_counter() - start) * 1000)
    finally:
        sock.close()
    return out


def raise_open_files(wanted: int) -> int:
    """The file-descriptor limit for this process and the server it starts: as
    many as `wanted` if root may raise it, else the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(wanted, hard), max(wanted, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def idle_streams(tiny: bool) -> None:
    """A document's trip with N idle streams (another user's) open, against none."""
    wanted = 200 if tiny else 10_000
    limit = raise_open_files(2 * wanted + 1_000)
    # The server takes half its descriptors, less a margin, for connections.
    idle_n = min(wanted, limit // 2 - 100)
    count = 10 if tiny else 150
    env = {
        "DOCINTEL_USERS": "user0:user0-pw,idle:idle-pw",
        "DOCINTEL_UPLOADS_PER_MINUTE": "100000",
        "DOCINTEL_MAX_STREAMS": str(idle_n + 10),
        "DOCINTEL_MAX_STREAMS_PER_USER": str(idle_n + 10),
        "DOCINTEL_MAX_CONNECTIONS": str(idle_n + 100),
    }
    with FakeOpenAI() as fake:
        server = start_server(
            {**env, "DOCINTEL_ANALYZER": "openai", "OPENAI_API_KEY": "sk-bench",
             "OPENAI_BASE_URL": fake.base_url}
        )  # fmt: skip
        try:
            token = server.login("user0", "user0-pw")
            trips(server, token, 3)  # warm-up
            before = trips(server, token, count)
            idle_token = server.login("idle", "idle-pw")
            idle = [connect(server, idle_token, Client("idle")) for _ in range(idle_n)]
            with_idle = trips(server, token, count)
            for sock in idle:
                sock.close()
            after = trips(server, token, count)
        finally:
            server.stop()
    base = statistics.median(before + after)
    load = statistics.median(with_idle)
    print(
        f"a document's trip (upload → completed on its stream), median of {count}: "
        f"{load:.1f} ms with {idle_n:,} idle streams open | {base:.1f} ms with none "
        f"(before and after) | ratio {load / base:.2f}x"
    )


def main(tiny: bool = False) -> None:
    users_n, streams, documents = (2, 5, 4) if tiny else (10, 100, 20)
    raise_open_files(4096)  # the server inherits it
    users = [f"user{i}" for i in range(users_n)]
    with FakeOpenAI() as fake:
        env = {
            "DOCINTEL_ANALYZER": "openai",
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": fake.base_url,
            "DOCINTEL_USERS": ",".join(f"{u}:{u}-pw" for u in users),
            "DOCINTEL_UPLOADS_PER_MINUTE": "100000",
            "DOCINTEL_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
        }
        server = start_server(env)
        try:
            one = run_phase(server, users[:1], 1, documents * users_n)
            many = run_phase(server, users, streams, documents)
        finally:
            server.stop()
    base = [x for c in one for x in c.latencies]
    load = [x for c in many for x in c.latencies]
    events = sum(len(c.ids) for c in many)
    print(
        f"baseline: 1 stream, {len(base)} events: "
        f"p50 {statistics.median(base):.1f} ms, p99 {percentile(base, 99):.1f} ms"
    )
    print(
        f"load: {len(many)} streams ({users_n} users x {streams}), {events} deliveries: "
        f"p50 {statistics.median(load):.1f} ms, p99 {percentile(load, 99):.1f} ms"
    )
    print(f"ratio p99 load / baseline: {percentile(load, 99) / max(percentile(base, 99), 0.1):.2f}x;"
          " every client got exactly its user's events, in order")  # fmt: skip
    idle_streams(tiny)
