"""Shared bits for the benchmarks: a live server and small statistics."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.conftest import ServerProcess

# The benchmarks hold up to 1,000 streams as one user (memory.py) and 1,000 in
# all (fanout.py): the stream and connection caps must not be what they measure.
# The server still keeps its connections inside its open-files limit.
UNCAPPED = {
    "DOCINTEL_MAX_STREAMS_PER_USER": "10000",
    "DOCINTEL_MAX_STREAMS": "10000",
    "DOCINTEL_MAX_CONNECTIONS": "12000",
}


def start_server(env: dict[str, str]) -> ServerProcess:
    root = Path(tempfile.mkdtemp(prefix="docintel-bench-"))
    return ServerProcess(root / "data", {"DOCINTEL_ANALYZER": "offline", **UNCAPPED, **env}).start()


def latencies(url: str, count: int, pause: float = 0.01) -> list[float]:
    """Sequential GETs of `url`; each latency in milliseconds."""
    out = []
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            start = time.perf_counter()
            client.get(url).raise_for_status()
            out.append((time.perf_counter() - start) * 1000)
            time.sleep(pause)
    return out


def summary(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[int(len(values) * 0.95) - 1]
    return f"median {statistics.median(values):6.2f}  p95 {p95:6.2f}  max {values[-1]:6.2f}"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]
