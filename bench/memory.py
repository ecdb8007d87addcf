"""Server memory under large uploads and under many idle event streams.

(a) 20 concurrent uploads of one 10 MB text file each (tiny: 3 x 1 MB) to the
server, which then extracts and analyses them (the fake OpenAI model, under a
millisecond per answer); the server's RSS is sampled from /proc every 10 ms
during the uploads and the processing, and again once it is idle. Baseline, in
the same run and under the same load: a bare uvicorn app that reads each
request body and throws it away.

(b) 1,000 idle SSE connections (tiny: 50) to /documents/stream, each having
received its first message; RSS per connection. Baseline: the same number of
connections to a bare ASGI app that sends one SSE message and waits for the
disconnect.

Both baselines are ASGI apps in this file, run under uvicorn in a subprocess
(`python -m bench.memory sink|sse PORT`), so that they pay the interpreter and
uvicorn like the server does. Figures are printed, never asserted.

    python -m bench memory [--tiny]
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench._common import start_server
from tests.conftest import REPO, TXTS, ServerProcess, free_port, wait_terminal
from tests.fake_openai import FakeOpenAI

MB = 1024 * 1024

# --- the baselines: bare ASGI apps ------------------------------------------------


async def upload_sink(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole request body, keeps none of it, answers 201."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False) and message["type"] == "http.request"
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def sse_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """One SSE message, then nothing until the client goes away."""
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"retry: 1000\nid: 0\n\n", "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass


class Bare:
    """One of the apps above under uvicorn, in a subprocess."""

    def __init__(self, kind: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.memory", kind, str(self.port)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.post(self.url, content=b"", timeout=1) if kind == "sink" else _probe(
                    self.port
                )
                return
            except (httpx.TransportError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"the bare {kind} app did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _probe(port: int) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(4096)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sampler:
    """RSS of a process every `every` seconds, in a thread, until stopped."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        self.pid = pid
        self.every = every
        self.peak = rss_kb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(self.every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


# --- (a) uploads --------------------------------------------------------------------


def text_of(size: int) -> bytes:
    """`size` bytes of real prose from the corpus, with accents and dashes (non-ASCII)."""
    corpus = b"\n".join(
        (TXTS / name).read_bytes() for name in ("quarterly-memo.txt", "accents-utf8.txt")
    )
    corpus += " — “quoted” — naïve café\n".encode()
    return (corpus * (size // len(corpus) + 1))[:size]


def concurrent_posts(count: int, post: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=post, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def settle(pid: int, seconds: float = 3.0) -> int:
    time.sleep(seconds)
    return rss_kb(pid)


def uploads_to_server(server: ServerProcess, count: int, body: bytes) -> tuple[int, int, int]:
    """(RSS before, peak, after) of the server, in kB."""
    with server.client() as warm:  # imports and first-use caches, not counted
        ids = [d["id"] for d in _upload(warm, "warm.txt", body[: 64 * 1024])["documents"]]
        wait_terminal(warm, ids)
    before = settle(server.proc.pid)  # type: ignore[union-attr]
    sampler = Sampler(server.proc.pid)  # type: ignore[union-attr]
    token = server.login()
    ids = []

    def post(i: int) -> None:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=300
        ) as client:
            ids.extend(d["id"] for d in _upload(client, f"big{i}.txt", body)["documents"])

    concurrent_posts(count, post)
    with server.client() as client:
        details = wait_terminal(client, ids, timeout=600)
    failed = [d for d in details.values() if d["status"] != "completed"]
    assert not failed, failed[0]
    peak = sampler.stop()
    return before, peak, settle(server.proc.pid)  # type: ignore[union-attr]


def _upload(client: httpx.Client, name: str, body: bytes) -> dict[str, Any]:
    response = client.post("/documents/upload", files=[("files", (name, body, "text/plain"))])
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def uploads_to_sink(sink: Bare, count: int, body: bytes) -> tuple[int, int, int]:
    httpx.post(sink.url, files=[("files", ("warm.txt", body[: 64 * 1024]))]).raise_for_status()
    before = settle(sink.proc.pid)
    sampler = Sampler(sink.proc.pid)

    def post(i: int) -> None:
        httpx.post(
            sink.url, files=[("files", (f"big{i}.txt", body))], timeout=300
        ).raise_for_status()

    concurrent_posts(count, post)
    peak = sampler.stop()
    return before, peak, settle(sink.proc.pid)


# --- (b) idle streams -------------------------------------------------------------


async def open_streams(port: int, path: str, count: int) -> list[asyncio.StreamWriter]:
    """`count` connections, each past its response head and first message."""

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        blank_lines = 0
        while blank_lines < 2:  # the end of the head, then of the first message
            line = await reader.readline()
            if not line:
                raise ConnectionError("the stream ended early")
            if not line.strip():
                blank_lines += 1
        return writer

    writers = []
    for start in range(0, count, 50):  # in batches: no listen-queue overflow
        writers += await asyncio.gather(*(one() for _ in range(min(50, count - start))))
    return writers


async def hold_streams(pid: int, port: int, path: str, count: int) -> tuple[int, int]:
    """(RSS before, RSS with `count` idle streams open), in kB."""
    warm = await open_streams(port, path, 20)  # first-use costs, not counted
    for writer in warm:
        writer.close()
    await asyncio.sleep(1)
    before = rss_kb(pid)
    writers = await open_streams(port, path, count)
    await asyncio.sleep(2)
    with_streams = rss_kb(pid)
    for writer in writers:
        writer.close()
    await asyncio.sleep(1)
    return before, with_streams


# --- the report ---------------------------------------------------------------------


def main(tiny: bool = False) -> None:
    uploads, size = (3, 1 * MB) if tiny else (20, 10 * MB)
    streams = 50 if tiny else 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers inherit it
    body = text_of(size)

    sink = Bare("sink")
    try:
        s_before, s_peak, s_after = uploads_to_sink(sink, uploads, body)
    finally:
        sink.stop()
    with FakeOpenAI() as fake:
        server = start_server(
            {
                "DOCINTEL_ANALYZER": "openai",
                "OPENAI_API_KEY": "sk-bench",
                "OPENAI_BASE_URL": fake.base_url,
                "DOCINTEL_UPLOADS_PER_MINUTE": "100000",
                "DOCINTEL_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
            }
        )
        try:
            before, peak, after = uploads_to_server(server, uploads, body)
            token = server.login()
            pid = server.proc.pid  # type: ignore[union-attr]
            path = f"/documents/stream?access_token={token}"
            d_before, d_open = asyncio.run(hold_streams(pid, server.port, path, streams))
        finally:
            server.stop()
    bare_sse = Bare("sse")
    try:
        b_before, b_open = asyncio.run(hold_streams(bare_sse.proc.pid, bare_sse.port, "/", streams))
    finally:
        bare_sse.stop()

    def mb(kb: int) -> str:
        return f"{kb / 1024:+.1f} MB"

    print(f"uploads: {uploads} concurrent x {size // MB} MB text, then extracted and analysed")
    print(
        f"  server:    peak {mb(peak - before)}, after {mb(after - before)} (RSS {before} kB idle)"
    )
    print(f"  bare sink: peak {mb(s_peak - s_before)}, after {mb(s_after - s_before)}")
    floor = 1024  # a baseline growth under 1 MB counts as 1 MB: no ratio of noise
    print(
        f"  ratio server/sink: peak {(peak - before) / max(s_peak - s_before, floor):.1f}x, "
        f"after {(after - before) / max(s_after - s_before, floor):.1f}x"
    )
    per_stream = (d_open - d_before) / streams
    per_bare = (b_open - b_before) / streams
    print(f"idle SSE connections: {streams}")
    print(f"  server:   {per_stream:.1f} KB per connection")
    print(f"  bare app: {per_bare:.1f} KB per connection")
    print(f"  ratio: {per_stream / max(per_bare, 0.1):.1f}x")


def _serve_bare(kind: str, port: int) -> None:
    import uvicorn

    app = upload_sink if kind == "sink" else sse_app
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    _serve_bare(sys.argv[1], int(sys.argv[2]))
