"""The server's child processes: out of the terminal's reach, and never outliving it.

A user runs `docintel serve` in a terminal and presses Ctrl-C: the terminal
sends SIGINT to its whole foreground process group. Only the server may act
on it (stop cleanly, put cut-short work back in the queue); its PDF parser and
analyzer processes must not die of it first. And however the server dies,
`kill -9` included, its children die with it.
"""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import httpx

from tests import pdfgen
from tests.conftest import (
    ServerProcess,
    descendants,
    free_port,
    process_state,
    upload,
    wait_status,
    wait_terminal,
)

SERVER_ENV = {
    "DOCINTEL_USERS": "alice:alice-pw,bob:bob-pw",
    "DOCINTEL_JWT_SECRET": "test-secret-that-is-at-least-32-bytes-long",
    "DOCINTEL_ANALYZER": "offline",
}
PARSER = "docintel.core.extraction"
ANALYZER = "docintel.core.children"

# Becomes the session leader with the pty as its controlling terminal, then
# *is* the server (exec keeps the pid): the shell's job, minus the shell.
TAKE_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, '-m', 'docintel', *sys.argv[1:]])"
)


class TerminalServer:
    """`docintel serve` as the foreground job of a pseudo-terminal."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.master, slave = pty.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[3] |= termios.ISIG  # ^C is a signal, as in any interactive terminal
        attrs[6][termios.VINTR] = b"\x03"
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        args = ["serve", "--port", str(self.port), "--data-dir", str(data_dir)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TAKE_TERMINAL, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**os.environ, **SERVER_ENV},
            start_new_session=True,
        )
        os.close(slave)
        self._output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._wait_ready()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every process holding the terminal has gone
                return
            if not chunk:
                return
            self._output.extend(chunk)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            if f"Uvicorn running on {self.url}" in self.output():  # this process bound it
                try:
                    if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        raise AssertionError(f"server did not start:\n{self.output()}")

    def press_ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def output(self) -> str:
        return self._output.decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        os.close(self.master)


def login(url: str) -> httpx.Client:
    token = httpx.post(url + "/auth/login", json={"username": "alice", "password": "alice-pw"})
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def wait_for_child(server_pid: int, marker: str, timeout: float = 30.0) -> dict[int, str]:
    """The server's descendants, once one of them runs `marker`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = descendants(server_pid)
        if any(marker in cmdline for cmdline in found.values()):
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {marker} child of {server_pid}: {descendants(server_pid)}")


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive after `timeout` seconds (zombies count as dead)."""
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if process_state(pid) is not None]
    return alive


def test_ctrl_c_mid_extraction_requeues_the_document_without_a_traceback(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    slow = tmp_path / "slow.pdf"
    slow.write_bytes(pdfgen.drawing_heavy_pdf())  # ~10 s of parsing: longer than the stop grace
    terminal = TerminalServer(data_dir)
    try:
        with login(terminal.url) as alice:
            [doc] = upload(alice, slow).json()["documents"]
            wait_status(alice, doc["id"], "processing")
        before = wait_for_child(terminal.proc.pid, PARSER)
        terminal.press_ctrl_c()
        assert terminal.proc.wait(timeout=30) == 130  # the shell convention for Ctrl-C
        time.sleep(0.2)  # let the reader drain the terminal
        output = terminal.output()
    finally:
        terminal.close()
    for word in ("Traceback", "KeyboardInterrupt", "leaked", "crashed"):
        assert word not in output, output
    assert wait_gone(list(before), timeout=5) == []

    server = ServerProcess(data_dir, {"DOCINTEL_ANALYZER": "offline"}).start()
    try:
        with server.client() as alice:
            detail = wait_terminal(alice, [doc["id"]], timeout=120)[doc["id"]]
    finally:
        server.stop()
    assert detail["status"] == "completed", detail
    steps = [(h["status"], h["detail"]) for h in detail["history"]]
    assert [status for status, _ in steps] == [
        "pending",
        "processing",
        "pending",
        "processing",
        "analyzing",
        "completed",
    ]
    assert steps[2][1] == "requeued: the server was stopped while it was processing"
    # The clean stop did not count: the second run is attempt 1 again.
    assert steps[1][1] == steps[3][1] == "extracting text (attempt 1)"


def test_kill_9_of_the_server_alone_takes_every_child_with_it(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", {"DOCINTEL_ANALYZER": "offline"}).start()
    assert server.proc is not None
    try:
        with server.client() as alice:
            [memo] = upload(alice, ("memo.txt", b"Please send the report by Friday.")).json()[
                "documents"
            ]
            wait_terminal(alice, [memo["id"]])  # the analyzer's worker process now runs
            upload(alice, ("slow.pdf", pdfgen.drawing_heavy_pdf()))
        children = wait_for_child(server.proc.pid, PARSER)
        assert any(ANALYZER in cmdline for cmdline in children.values()), children
        os.kill(server.proc.pid, signal.SIGKILL)  # the server's own pid, not its group
        server.proc.wait(timeout=10)
        assert wait_gone(list(children), timeout=5) == [], children
    finally:
        server.kill()


def test_sigterm_stops_every_child_quietly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", {"DOCINTEL_ANALYZER": "offline"}).start()
    assert server.proc is not None
    with server.client() as alice:
        [memo] = upload(alice, ("memo.txt", b"Please send the report by Friday.")).json()[
            "documents"
        ]
        wait_terminal(alice, [memo["id"]])
    children = wait_for_child(server.proc.pid, ANALYZER)
    # uvicorn re-raises the signal once it has shut down, as process managers expect.
    assert server.stop(signal.SIGTERM) == -signal.SIGTERM
    assert wait_gone(list(children), timeout=5) == []
    log = server.log()
    for word in ("Traceback", "leaked", "KeyboardInterrupt"):
        assert word not in log, log
