"""Pipeline throughput: documents through a live server against the bare work in a loop.

(a) `openai`: small TXT files uploaded to a live server (`DOCINTEL_ANALYZER=openai`,
the tests' fake model on loopback with TCP_NODELAY), at W=1 and W=4 workers;
docs/s from the first upload to the last `completed` event on the stream.
Baseline, in the same run: the same decode (`decode_text`) and the same SDK calls
(`OpenAIAnalyzer.analyze` on the decoded text) in a loop, W at a time, no server.

(b) `offline`: the same through the offline analyzer's child processes, against
`OfflineAnalyzer.analyze` called directly, W at a time.

The fake model runs in a process of its own in both phases, so neither the
server nor the baseline shares a GIL with it. Every run is warmed up first (the
SDK client, the analyzer's children, the server's first queries). Nothing is
asserted: the machine is shared and noisy; the spread is printed.

    python -m bench pipeline [--tiny]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import httpx
from httpx_sse import connect_sse

from bench._common import start_server
from docintel.core.analysis.base import AnalysisResult
from docintel.core.analysis.offline import OfflineAnalyzer
from docintel.core.analysis.openai import OpenAIAnalyzer
from docintel.core.config import Settings
from docintel.core.extraction import decode_text
from tests.conftest import ServerProcess, descendants

TICKS = os.sysconf("SC_CLK_TCK")
CORES = len(os.sched_getaffinity(0))
BATCH = 20  # files per upload request (the server's default cap)
API_KEY = "sk-bench"
FAKE = """
import sys
from tests.fake_openai import FakeOpenAI
with FakeOpenAI() as fake:
    print(fake.base_url, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
"""


def documents(count: int, tag: str) -> list[tuple[str, bytes]]:
    """Small, distinct TXT files (~400 bytes), like memos."""
    return [
        (
            f"{tag}-{i:04d}.txt",
            (
                f"Memo {i} ({tag}). Sales grew by {i % 17 + 3}% this quarter in the north region.\n"
                "The team shipped the new billing system on time and customers like it.\n"
                "Support tickets fell, but churn in the small-business segment is still high.\n"
                "Actions:\n- Please send the updated figures by Friday.\n"
                f"- Schedule a review with finance before the {i % 28 + 1}th.\n"
                "We must keep the hiring freeze until the budget is approved.\n"
            ).encode(),
        )
        for i in range(count)
    ]


# --- through the server --------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    rate: float  # documents per second, wall clock
    cpu_ms: float  # CPU per document of the process doing the work and its children
    # CPU per document of every process of the run: this one (the uploads and the
    # stream's reader, or the loop), the fake model, the server and their children
    all_cpu_ms: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) and its live children (Linux /proc)."""
    total = 0.0
    for each in (pid, *descendants(pid)):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return total


def through_server(env: dict[str, str], workers: int, count: int, tag: str) -> Figure:
    """First upload → last terminal event, on a fresh server with `workers`."""
    server = start_server(
        {
            **env,
            "DOCINTEL_WORKERS": str(workers),
            "DOCINTEL_UPLOADS_PER_MINUTE": "1000000",
            "DOCINTEL_LOGIN_ATTEMPTS_PER_MINUTE": "1000000",
        }
    )
    try:
        token = server.login()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=120) as api:
            # Warm-up: every worker (and analyzer child) busy once, untimed.
            run_batch(server, api, token, documents(workers, f"warm-{tag}"))
            assert server.proc is not None
            cpu, everything = cpu_seconds(server.proc.pid), cpu_seconds(os.getpid())
            rate = run_batch(server, api, token, documents(count, tag))
            return Figure(
                rate,
                (cpu_seconds(server.proc.pid) - cpu) * 1000 / count,
                (cpu_seconds(os.getpid()) - everything) * 1000 / count,
            )
    finally:
        server.stop()


def run_batch(
    server: ServerProcess, api: httpx.Client, token: str, files: list[tuple[str, bytes]]
) -> float:
    """Upload `files`; docs/s until the stream has shown every one terminal."""
    names = {name for name, _ in files}
    ended: set[str] = set()
    failed: list[str] = []
    ready = threading.Event()
    done = threading.Event()
    finish = [0.0]

    def follow() -> None:
        timeout = httpx.Timeout(300, read=300)
        with httpx.Client(base_url=server.url, timeout=timeout) as client:
            with connect_sse(
                client,
                "GET",
                "/documents/stream",
                headers={"Authorization": f"Bearer {token}"},
            ) as source:
                ready.set()
                for sse in source.iter_sse():
                    if not sse.data:
                        continue
                    data = sse.json()
                    if data["filename"] in names and data["status"] in ("completed", "failed"):
                        if data["status"] == "failed":
                            failed.append(f"{data['filename']}: {data.get('error')}")
                        ended.add(data["filename"])
                        if len(ended) == len(names):
                            finish[0] = time.perf_counter()
                            done.set()
                            return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    if not ready.wait(30):
        raise RuntimeError("the stream did not open")
    time.sleep(0.2)  # the stream's first read is done: its position is set
    start = time.perf_counter()
    for i in range(0, len(files), BATCH):
        multipart = [("files", item) for item in files[i : i + BATCH]]
        api.post("/documents/upload", files=multipart).raise_for_status()
    if not done.wait(600):
        raise RuntimeError(f"only {len(ended)} of {len(names)} documents ended")
    reader.join(5)
    if failed:
        raise RuntimeError(f"{len(failed)} documents failed, e.g. {failed[0]}")
    return len(files) / (finish[0] - start)


# --- the baseline: the same work in a loop, no server ---------------------------


class _Analyzer(Protocol):
    async def analyze(self, text: str, *, filename: str) -> AnalysisResult: ...
    async def aclose(self) -> None: ...


def in_a_loop(
    make: Callable[[], _Analyzer], workers: int, count: int, tag: str, fake: int | None = None
) -> Figure:
    """docs/s of read + decode + analyze for `count` files on disk, `workers` at a time.

    `fake`: the fake model's pid (a child of ours), left out of the loop's own CPU.
    """
    folder = Path(tempfile.mkdtemp(prefix="docintel-bench-loop-"))
    paths = []
    for name, data in documents(count + workers, tag):
        path = folder / name
        path.write_bytes(data)
        paths.append(path)

    async def run(analyzer: _Analyzer, todo: list[Path]) -> float:
        queue = list(reversed(todo))

        async def worker() -> None:
            while queue:
                path = queue.pop()
                text = decode_text(path.read_bytes())
                await analyzer.analyze(text, filename=path.name)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return len(todo) / (time.perf_counter() - start)

    async def main() -> Figure:
        # Made inside the loop: the SDK client and the children's pipes belong to it.
        analyzer = make()
        try:
            await run(analyzer, paths[:workers])  # warm-up, untimed
            everything = cpu_seconds(os.getpid())
            model = cpu_seconds(fake) if fake else 0.0
            rate = await run(analyzer, paths[workers:])
            model = (cpu_seconds(fake) if fake else 0.0) - model
            used = cpu_seconds(os.getpid()) - everything
            return Figure(rate, (used - model) * 1000 / count, used * 1000 / count)
        finally:
            await analyzer.aclose()

    return asyncio.run(main())


# --- the report ---------------------------------------------------------------


def start_fake() -> tuple[subprocess.Popen[str], str]:
    """The fake model in a process of its own; returns it and its base URL."""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE],
        cwd=repo,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:6.1f}"
    return f"{statistics.median(values):6.1f} (runs: {', '.join(f'{v:.1f}' for v in values)})"


def report(label: str, pipeline: list[Figure], baseline: list[Figure]) -> float:
    p = statistics.median(f.rate for f in pipeline)
    b = statistics.median(f.rate for f in baseline)
    pad = " " * len(label)
    print(f"  {label}: pipeline {spread([f.rate for f in pipeline])} docs/s")
    print(f"  {pad}  baseline {spread([f.rate for f in baseline])} docs/s")
    print(f"  {pad}  ratio baseline / pipeline {b / p:.2f}x (pipeline / baseline {p / b:.2f})")
    print(
        f"  {pad}  CPU ms/doc: server {spread([f.cpu_ms for f in pipeline])},"
        f" loop {spread([f.cpu_ms for f in baseline])}"
    )
    # What no parallelism can beat: every core busy with nothing but this work.
    everything = statistics.median(f.all_cpu_ms for f in pipeline)
    ceiling = CORES * 1000 / everything
    print(
        f"  {pad}  CPU ms/doc of every process in the server run: {everything:.1f};"
        f" {CORES} cores cap the pipeline at {ceiling:.0f} docs/s ({ceiling / p:.2f}x this rate)"
    )
    return p


def main(tiny: bool = False) -> None:
    count, offline_count, runs = (10, 6, 1) if tiny else (200, 60, 3)
    widths = (1, 4)
    fake, base_url = start_fake()
    try:
        env = {
            "DOCINTEL_ANALYZER": "openai",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": base_url,
        }
        print(f"(a) openai analyzer, fake model; {count} small TXT; median of {runs} runs")
        by_width = {}
        for workers in widths:
            settings = Settings(openai_api_key=API_KEY, openai_base_url=base_url)
            pipe, base = [], []
            for _ in range(runs):
                pipe.append(through_server(env, workers, count, f"w{workers}"))
                analyzer = partial(OpenAIAnalyzer, settings)
                base.append(in_a_loop(analyzer, workers, count, "loop", fake.pid))
            by_width[workers] = report(f"W={workers}", pipe, base)
        print(f"  W=4 / W=1 through the pipeline: {by_width[4] / by_width[1]:.2f}x")
    finally:
        assert fake.stdin is not None
        fake.stdin.close()
        fake.wait(10)

    print(f"(b) offline analyzer; {offline_count} small TXT; median of {runs} runs")
    for workers in widths:
        pipe, base = [], []
        for _ in range(runs):
            pipe.append(
                through_server(
                    {"DOCINTEL_ANALYZER": "offline"}, workers, offline_count, f"o{workers}"
                )
            )
            base.append(in_a_loop(partial(OfflineAnalyzer, workers), workers, offline_count, "off"))
        report(f"W={workers}", pipe, base)


if __name__ == "__main__":
    main(tiny="--tiny" in sys.argv)
