"""Do streams leak? Server memory and task count across many connect/drop cycles.

Baseline: the server's RSS after a 500-cycle warm-up (imports, caches and
allocator pools settle), measured in the same run; then 5,000 more cycles, half
of them dropping in the middle of a replay. Prints RSS, open streams and
asyncio tasks, and the ratio of RSS after to the baseline.

    python -m bench stream_churn [--tiny]
"""

from __future__ import annotations

import socket
import time

import httpx

from bench._common import start_server
from tests.conftest import ServerProcess, upload, wait_terminal


def cycle(server: ServerProcess, token: str, replay: bool) -> None:
    query = "&last_event_id=0" if replay else ""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"GET /documents/stream?access_token={token}{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        sock.recv(4096)


def main(tiny: bool = False) -> None:
    server = start_server({"DOCINTEL_UPLOADS_PER_MINUTE": "1000"})
    try:
        with server.client() as alice:
            ids = [
                d["id"]
                for d in upload(
                    alice, *((f"d{i}.txt", b"Some text. More text.") for i in range(20))
                ).json()["documents"]
            ]
            wait_terminal(alice, ids)
            token = alice.headers["Authorization"].split()[1]
        warmup, cycles = (20, 100) if tiny else (500, 5000)
        for i in range(warmup):
            cycle(server, token, replay=i % 2 == 0)
        time.sleep(1)
        baseline = server.rss_kb()
        start = time.perf_counter()
        for i in range(cycles):
            cycle(server, token, replay=i % 2 == 0)
        elapsed = time.perf_counter() - start
        for _ in range(50):  # let the last connections finish closing
            health = httpx.get(server.url + "/healthz").json()
            if health["streams"] == 0:
                break
            time.sleep(0.2)
        after = server.rss_kb()
    finally:
        server.stop()
    print(
        f"cycles: {cycles} in {elapsed:.1f} s ({cycles / elapsed:.0f}/s), half dropped mid-replay"
    )
    print(f"server RSS: baseline {baseline} kB, after {after} kB, ratio {after / baseline:.3f}")
    print(f"open streams after: {health['streams']}, asyncio tasks: {health['tasks']}")
