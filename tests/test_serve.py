"""`docintel serve`: one server per data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests import pdfgen
from tests.conftest import ServerProcess, free_port, upload, wait_status, wait_terminal


def serve_again(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docintel", "serve", "--data-dir", str(data_dir),
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "DOCINTEL_USERS": "alice:alice-pw"},
    )  # fmt: skip


def test_a_second_server_on_the_same_data_dir_refuses_to_start(make_server: Any) -> None:
    first: ServerProcess = make_server({"DOCINTEL_ANALYZER": "offline"})
    assert first.proc is not None
    with first.client() as alice:
        [doc] = upload(alice, ("slow.pdf", pdfgen.drawing_heavy_pdf(40))).json()["documents"]
        wait_status(alice, doc["id"], "processing")

        second = serve_again(first.data_dir)

        assert second.returncode == 3
        [line] = second.stderr.strip().splitlines()
        assert f"PID {first.proc.pid}" in line and f"port {first.port}" in line, line
        assert str(first.data_dir) in line
        # The first server's work went on untouched: no false requeue, no second run.
        detail = wait_terminal(alice, [doc["id"]], timeout=120)[doc["id"]]
    assert [h["status"] for h in detail["history"]] == [
        "pending", "processing", "analyzing", "completed"
    ]  # fmt: skip


def test_the_lock_dies_with_its_server(make_server: Any) -> None:
    first: ServerProcess = make_server()
    first.kill()  # no clean-up runs: the kernel drops the lock
    again = ServerProcess(first.data_dir).start()
    try:
        with again.client() as alice:
            assert alice.get("/documents").status_code == 200
    finally:
        again.stop()
