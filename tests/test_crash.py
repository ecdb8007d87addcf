"""kill -9 of the real server at every stage loses no document and leaves none stuck.

The server runs as a subprocess; the fake LLM is made slow (per-document
FAKE-SCRIPT markers) and a generated PDF is slow to parse, so each stage can
be seen in the status before the SIGKILL. After each restart on the same data
dir, every accepted document must end `completed` or `failed` with a history
that tells what happened.
"""

from __future__ import annotations

import itertools
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests import pdfgen
from tests.conftest import (
    TERMINAL,
    FakeOpenAI,
    ServerProcess,
    openai_env,
    read_events,
    terminal_for,
    upload,
    wait_status,
    wait_terminal,
)

# Which status may follow which, crashes included (a kill puts in-flight work back to pending).
NEXT = {
    "pending": {"processing"},
    "processing": {"analyzing", "failed", "pending"},
    "analyzing": {"completed", "failed", "pending"},
}


def extraction_children(data_dir: Path) -> list[int]:
    """Pids of PDF parser processes working on files of this data dir (Linux /proc)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue  # gone meanwhile
        if b"docintel.core.extraction" in cmdline and str(data_dir).encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def wait_until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def check_history(detail: dict[str, Any], kills: int) -> None:
    """A valid story: pending first, one `requeued` per kill that caught it mid-flight, terminal last."""
    steps = detail["history"]
    statuses = [h["status"] for h in steps]
    assert statuses[0] == "pending", statuses
    assert statuses[-1] in TERMINAL and statuses[-1] == detail["status"], statuses
    for before, after in itertools.pairwise(statuses):
        assert after in NEXT.get(before, set()), f"{before} → {after} in {statuses}"
    requeued = [h for h in steps[1:] if h["status"] == "pending"]
    assert len(requeued) == kills, statuses
    assert all("requeued" in h["detail"] for h in requeued), requeued
    attempts = [h["detail"] for h in steps if h["status"] == "processing"]
    assert attempts == [f"extracting text (attempt {n})" for n in range(1, len(attempts) + 1)]
    times = [h["at"] for h in steps]
    assert times == sorted(times), times


def check_event_log(server: ServerProcess, client: httpx.Client, details: dict[str, dict]) -> None:
    """The persisted event log replays every transition, with increasing ids, across restarts."""
    token = client.headers["Authorization"].split()[1]
    ids = list(details)
    events = read_events(
        server,
        token,
        params=[("last_event_id", 0), *(("document_id", i) for i in ids)],
        until=terminal_for(ids),
        timeout=30,
    )
    event_ids = [e["id"] for e in events]
    assert event_ids == sorted(set(event_ids)), "event ids must strictly increase"
    for document_id, detail in details.items():
        streamed = [e["data"]["status"] for e in events if e["data"]["document_id"] == document_id]
        assert streamed == [h["status"] for h in detail["history"]], document_id


def start_cut_off_upload(
    server: ServerProcess, token: str, declared: int = 4 * 1024 * 1024
) -> socket.socket:
    """Send the headers and the first part of a multipart body; the rest never comes."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="files"; filename="cut-off.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    request = (
        "POST /documents/upload HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(head) + declared}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(request + head + b"A line of text that will never end.\n" * 8000)  # ~290 KB
    return sock


def incoming_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "incoming").glob("*") if p.is_file())


def tracebacks(log: str, allowed: tuple[str, ...] = ()) -> list[str]:
    """The exception line of each traceback in a server log, but for `allowed` ones."""
    found = []
    for block in log.split("Traceback (most recent call last):")[1:]:
        lines = [line for line in block.splitlines() if line and not line.startswith(" ")]
        last = lines[0] if lines else block[:200]
        if not any(name in last for name in allowed):
            found.append(last)
    return found


def check_no_upload_leftovers(data_dir: Path, known_ids: set[str]) -> None:
    assert list((data_dir / "incoming").iterdir()) == []
    folders = {p.name for p in (data_dir / "uploads").iterdir()}
    assert folders == known_ids, folders ^ known_ids


def test_kill_9_at_every_stage_loses_nothing_and_leaves_nothing_stuck(
    make_server, tmp_path: Path
) -> None:
    slow_pdf = tmp_path / "slow-to-parse.pdf"
    slow_pdf.write_bytes(pdfgen.slow_pdf())  # seconds of pypdf work
    marker = f"crash{uuid.uuid4().hex[:8]}"
    with FakeOpenAI() as fake:
        server: ServerProcess = make_server(openai_env(fake, DOCINTEL_OPENAI_TIMEOUT="60"))
        data = server.data_dir
        with server.client() as alice:
            response = upload(
                alice,
                slow_pdf,
                (
                    "slow-llm.txt",
                    f"The model is slow on this one. FAKE-SCRIPT:{marker}:slow:60".encode(),
                ),
                ("queued-1.txt", b"Waiting in the queue. It completes in the end."),
                ("queued-2.txt", b"Also waiting. It completes as well."),
            )
            assert response.status_code == 201, response.text
            ids = [d["id"] for d in response.json()["documents"]]
            pdf_id, llm_id = ids[0], ids[1]

            # 1. While extracting: the parser child is busy with the slow PDF.
            wait_status(alice, pdf_id, "processing")
            wait_until(lambda: extraction_children(data), "the PDF parser to start")
        server.kill()
        # The parser dies with the server instead of parsing on as an orphan.
        wait_until(lambda: not extraction_children(data), "the orphaned parser to die", timeout=2)

        # 2. While analysing: the slow PDF completes on its second attempt; then the LLM hangs.
        server.start()
        with server.client() as alice:
            wait_status(alice, llm_id, "analyzing")
            assert alice.get(f"/documents/{pdf_id}").json()["status"] == "completed"
        server.kill()

        # 3. While uploading: part of a body has reached incoming/ when the server dies.
        server.start()
        with server.client() as alice:
            token = alice.headers["Authorization"].split()[1]
            wait_terminal(alice, ids)
            total = alice.get("/documents").json()["total"]
            sock = start_cut_off_upload(server, token)
            try:
                wait_until(lambda: incoming_bytes(data) > 0, "the upload to reach incoming/")
                server.kill()
            finally:
                sock.close()

        # 4. A client that hangs up mid-body (no kill) leaves nothing either.
        server.start()
        check_no_upload_leftovers(data, set(ids))
        with server.client() as alice:
            token = alice.headers["Authorization"].split()[1]
            sock = start_cut_off_upload(server, token)
            wait_until(lambda: incoming_bytes(data) > 0, "the upload to reach incoming/")
            sock.close()
            wait_until(
                lambda: not list((data / "incoming").iterdir()), "the partial upload to be removed"
            )
            assert alice.get("/documents").json()["total"] == total == len(ids)

            details = wait_terminal(alice, ids)
            check_event_log(server, alice, details)
        check_no_upload_leftovers(data, set(ids))

    assert {i: d["status"] for i, d in details.items()} == dict.fromkeys(ids, "completed")
    kills = {pdf_id: 1, llm_id: 1}
    for document_id, detail in details.items():
        check_history(detail, kills.get(document_id, 0))
    pdf_steps = details[pdf_id]["history"]
    assert [h["status"] for h in pdf_steps] == [
        "pending",
        "processing",
        "pending",
        "processing",
        "analyzing",
        "completed",
    ]
    assert "while it was processing" in pdf_steps[2]["detail"]
    llm_steps = details[llm_id]["history"]
    assert [h["status"] for h in llm_steps] == [
        "pending",
        "processing",
        "analyzing",
        "pending",
        "processing",
        "analyzing",
        "completed",
    ]
    assert "while it was analyzing" in llm_steps[3]["detail"]
    assert len(fake.calls_for(marker)) == 2  # the hung call, then the one that completed
    assert tracebacks(server.log()) == []


def test_a_document_that_keeps_dying_mid_flight_fails_after_three_attempts(make_server) -> None:
    marker = f"doom{uuid.uuid4().hex[:8]}"
    with FakeOpenAI() as fake:
        server: ServerProcess = make_server(openai_env(fake, DOCINTEL_OPENAI_TIMEOUT="60"))
        with server.client() as alice:
            response = upload(
                alice,
                (
                    "doomed.txt",
                    f"Every attempt hangs. FAKE-SCRIPT:{marker}:slow:60,slow:60,slow:60".encode(),
                ),
                ("after-1.txt", b"Queued behind the doomed one. It completes."),
                ("after-2.txt", b"Also queued behind it. It completes too."),
            )
            assert response.status_code == 201, response.text
            ids = [d["id"] for d in response.json()["documents"]]
        doomed = ids[0]
        for _ in range(3):
            with server.client() as alice:
                wait_status(alice, doomed, "analyzing")
            server.kill()
            server.start()
        with server.client() as alice:
            details = wait_terminal(alice, ids)
            check_event_log(server, alice, details)

    victim = details[doomed]
    assert victim["status"] == "failed"
    assert "interrupted 3 times" in victim["error"]
    assert [h["status"] for h in victim["history"]] == [
        "pending",
        *["processing", "analyzing", "pending"] * 2,
        "processing",
        "analyzing",
        "failed",
    ]
    assert victim["history"][-1]["detail"] == victim["error"]
    check_history(victim, kills=2)
    for other in ids[1:]:
        assert details[other]["status"] == "completed"
        check_history(details[other], kills=0)
    assert len(fake.calls_for(marker)) == 3  # no fourth attempt


def test_a_client_hanging_up_mid_upload_is_not_a_server_error(make_server) -> None:
    server: ServerProcess = make_server({"DOCINTEL_ANALYZER": "offline"})
    with server.client() as alice:
        token = alice.headers["Authorization"].split()[1]
        sock = start_cut_off_upload(server, token)
        wait_until(lambda: incoming_bytes(server.data_dir) > 0, "the upload to reach incoming/")
        sock.close()
        wait_until(
            lambda: not list((server.data_dir / "incoming").iterdir()), "the partial upload to go"
        )
        assert alice.get("/documents").json()["total"] == 0
        assert alice.get("/healthz").status_code == 200
    assert tracebacks(server.log()) == []
