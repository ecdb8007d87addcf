"""`python -m bench NAME [--tiny]`: run one benchmark, or `all`.

Each benchmark prints its figure, the baseline measured in the same run, and
their ratio; nothing is asserted (machines here are shared and noisy). `--tiny`
runs each at a token size: CI does that so no benchmark rots.
"""

from __future__ import annotations

import argparse
import importlib
import time

BENCHMARKS = {
    "cli_startup": "docintel --version / --help / list --json start-up vs python -c pass",
    "fanout": "commit -> client latency, many streams vs one",
    "healthz_latency": "/healthz latency idle vs while large PDFs are parsed",
    "pipeline": "docs/s through the server vs the same decode + analyzer calls in a loop",
    "queries": "filtered list at 100k docs, 100k-event replay, EXPLAIN of every query",
    "memory": "server RSS under large uploads and idle streams, vs bare ASGI apps",
    "stream_churn": "server memory and tasks across stream connect/drops",
    "cluster": "PostgreSQL: 1/2/4 worker processes vs ideal; stream delay across nodes",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--tiny", action="store_true", help="token sizes (CI)")
    args = parser.parse_args()
    for name in BENCHMARKS if args.name == "all" else [args.name]:
        print(f"== {name}: {BENCHMARKS[name]}{' (tiny)' if args.tiny else ''}", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"bench.{name}").main(tiny=args.tiny)
        print(f"   ({time.perf_counter() - start:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
