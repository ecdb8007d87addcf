"""Past one process, on PostgreSQL: worker scaling, and stream delay across nodes.

(a) Throughput of 1, 2 and 4 `docintel worker` processes (one document at a
    time each) behind an API node (`serve --workers 0`), with a model that
    takes 0.5 s per call, from the upload of a batch to its last `completed`
    (after one untimed warm-up document per worker). Baseline: the ideal, N
    workers / 0.5 s, since the model's time is the whole of a document's ideal
    cost; the figure is the measured rate over it (issue 10's target: ≥ 0.9).
(b) Stream delay across nodes: an SSE client on the API node, every
    transition written by a worker process; delay = the client's clock minus
    the event's commit time. Baseline: the same with the workers inside the
    API process (`serve` on the same database), measured in the same run.

Each figure is printed with its baseline and ratio; nothing is asserted. Needs
the PostgreSQL server of tests/pg.py (the machine's own; DOCINTEL_TEST_DATABASE_URL).

    python -m bench cluster [--tiny]
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench._common import UNCAPPED, percentile
from tests.conftest import ServerProcess, upload, wait_terminal
from tests.fake_openai import FakeOpenAI
from tests.pg import SECRET, PostgresServer, WorkerProcess

MODEL_SECONDS = 0.5


@contextlib.contextmanager
def cluster_env(server: PostgresServer, fake: FakeOpenAI) -> Iterator[tuple[dict[str, str], Path]]:
    url = server.create()
    root = Path(tempfile.mkdtemp(prefix="docintel-bench-cluster-"))
    env = {
        "DOCINTEL_DATABASE_URL": url,
        "DOCINTEL_JWT_SECRET": SECRET,
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": fake.base_url,
        "DOCINTEL_UPLOADS_PER_MINUTE": "100000",
        **UNCAPPED,
    }
    try:
        yield env, root / "data"
    finally:
        server.drop(url)


def throughput(server: PostgresServer, workers: int, per_worker: int) -> float:
    """Documents per second through `workers` worker processes, 1 document at a time each."""
    with FakeOpenAI(delay=MODEL_SECONDS) as fake, cluster_env(server, fake) as (env, data):
        api = ServerProcess(data, {**env, "DOCINTEL_WORKERS": "0"}).start()
        started = [
            WorkerProcess(data, {**env, "DOCINTEL_WORKERS": "1"}, f"w{n}") for n in range(workers)
        ]
        try:
            count = workers * per_worker
            with api.client() as client:
                # Warm-up, untimed: each worker's first call sets up its SDK client
                # and connections, once per process, not per document.
                warm = [(f"w{i}.txt", f"Warm-up {i}. Fine.".encode()) for i in range(workers)]
                wait_terminal(client, [d["id"] for d in upload(client, *warm).json()["documents"]])
                began = time.perf_counter()
                files = [(f"d{i}.txt", f"Document {i}. Review it.".encode()) for i in range(count)]
                ids = []
                for first in range(0, count, 20):  # DOCINTEL_MAX_FILES_PER_UPLOAD
                    batch = upload(client, *files[first : first + 20]).json()["documents"]
                    ids += [d["id"] for d in batch]
                assert len(ids) == count
                done = wait_terminal(client, ids, timeout=120)
                elapsed = time.perf_counter() - began
            assert {d["status"] for d in done.values()} == {"completed"}
            return count / elapsed
        finally:
            for worker in started:
                worker.stop()
            api.stop()


def stream_delays(server: PostgresServer, count: int, across: bool) -> list[float]:
    """Commit → client delays (ms) of every event of `count` documents."""
    with FakeOpenAI() as fake, cluster_env(server, fake) as (env, data):
        api = ServerProcess(data, {**env, "DOCINTEL_WORKERS": "0" if across else "2"}).start()
        started = [WorkerProcess(data, {**env, "DOCINTEL_WORKERS": "2"}, "w")] if across else []
        try:
            token = api.login()
            delays: list[float] = []
            ready = threading.Event()
            expected = 4 * count
            reader = threading.Thread(target=_listen, args=(api, token, delays, expected, ready))
            reader.start()
            ready.wait(10)
            with api.client() as client:
                for i in range(count):
                    upload(client, (f"s{i}.txt", f"Note {i}. Fine.".encode()))
                    time.sleep(0.02)  # one at a time: the delay, not a queue, is measured
            reader.join(120)
            return delays
        finally:
            for worker in started:
                worker.stop()
            api.stop()


def _listen(
    api: ServerProcess, token: str, delays: list[float], expected: int, ready: threading.Event
) -> None:
    with httpx.stream(
        "GET",
        api.url + "/documents/stream",
        params={"access_token": token},
        timeout=httpx.Timeout(60, read=60),
    ) as response:
        ready.set()
        for line in response.iter_lines():
            if line.startswith("data: "):
                data: dict[str, Any] = json.loads(line[6:])
                at = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00"))
                delays.append((time.time() - at.timestamp()) * 1000)
                if len(delays) >= expected:
                    return


def main(tiny: bool = False) -> None:
    server = PostgresServer()
    server.prepare()
    try:
        per_worker, widths, streamed = (2, (1, 2), 5) if tiny else (16, (1, 2, 4), 60)
        print(f"(a) worker processes, 1 document at a time each, model {MODEL_SECONDS} s per call")
        for workers in widths:
            rate = throughput(server, workers, per_worker)
            ideal = workers / MODEL_SECONDS
            print(
                f"  {workers} worker(s): {rate:5.2f} docs/s   ideal {ideal:5.2f}   "
                f"ratio {rate / ideal:.2f}"
            )
        print(f"(b) commit -> SSE client delay, {streamed} documents, ms")
        inside = stream_delays(server, streamed, across=False)
        across = stream_delays(server, streamed, across=True)
        for name, values in (("same process (baseline)", inside), ("across nodes", across)):
            print(
                f"  {name:24} p50 {percentile(values, 50):6.1f}  p99 {percentile(values, 99):6.1f}"
                f"  ({len(values)} events)"
            )
        ratio = percentile(across, 99) / max(percentile(inside, 99), 0.1)
        print(f"  p99 across nodes / same process: {ratio:.2f}x")
    finally:
        server.finish()
