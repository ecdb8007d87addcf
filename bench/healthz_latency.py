"""Does PDF extraction block the event loop? /healthz latency idle vs. while parsing.

Baseline: the same server, idle, in the same run. Load: large PDFs (the corpus's
117-page lecture notes and a generated 1,500-page file) parsed one after another.
Prints latency in ms and the ratio of medians; a blocked loop would show
seconds, not milliseconds.

    python -m bench healthz_latency [--tiny]
"""

from __future__ import annotations

import statistics
import threading

from bench._common import latencies, start_server, summary
from tests.conftest import PDFS, upload, wait_terminal
from tests.pdfgen import text_pdf


def main(tiny: bool = False) -> None:
    server = start_server({"DOCINTEL_UPLOADS_PER_MINUTE": "1000"})
    try:
        with server.client() as alice:
            idle = latencies(server.url + "/healthz", 30 if tiny else 300)
            big = (
                PDFS / ("minimal-document.pdf" if tiny else "GeoTopo-komprimiert.pdf")
            ).read_bytes()
            pages = 20 if tiny else 1500
            many = text_pdf([f"Page {i}. Quarterly figures and notes." for i in range(pages)])
            files = [("geotopo.pdf", big), ("many-pages.pdf", many)] * (1 if tiny else 2)
            ids = [d["id"] for d in upload(alice, *files).json()["documents"]]
            busy: list[float] = []
            done = threading.Event()

            def poll() -> None:
                while not done.is_set():
                    busy.extend(latencies(server.url + "/healthz", 20))

            poller = threading.Thread(target=poll)
            poller.start()
            details = wait_terminal(alice, ids, timeout=300)
            done.set()
            poller.join()
    finally:
        server.stop()
    statuses = sorted(d["status"] for d in details.values())
    print(f"documents: {len(ids)} large PDFs -> {statuses}")
    print(f"/healthz idle     (n={len(idle):4d}): {summary(idle)} ms")
    print(f"/healthz parsing  (n={len(busy):4d}): {summary(busy)} ms")
    print(
        f"ratio of medians (parsing / idle): {statistics.median(busy) / statistics.median(idle):.2f}x"
    )
