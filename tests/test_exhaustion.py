"""Running out of resources mid-document: the document waits, the worker lives.

Issue 9, points 1 and 4 (the requeue part): a full disk while a document is
analysed, a database another process holds, and a server with no file
descriptors left. Each is the real thing — a tmpfs filled to the last block,
an exclusive SQLite transaction from a second connection, the server's
descriptor limit lowered with prlimit and its free descriptors taken by idle
connections — against a live server.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PDFS, ServerProcess, openai_env, upload, wait_status, wait_terminal
from tests.fake_openai import FakeOpenAI


def fill(mount: Path) -> Path:
    """Write a file until the filesystem has not one free block (ENOSPC)."""
    filler = mount / "filler"
    with filler.open("wb", buffering=0) as f:
        for chunk in (1 << 20, 4096):  # large to fill fast, then page by page to the last one
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not seen within {timeout} s: {what}")


def statuses(detail: dict[str, Any]) -> list[str]:
    return [h["status"] for h in detail["history"]]


def note(filename: str, marker: str) -> tuple[str, bytes]:
    """A small text document; its FAKE-SCRIPT `marker` tells the fake model how to answer."""
    body = f"Quarterly maintenance report for the archive. {marker} Nothing else to add."
    return (filename, body.encode())


def attempts(database: Path, document_id: str) -> int:
    """The attempts counted against a document (not in the API), read from the database."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        [(n,)] = db.execute("SELECT attempts FROM document WHERE id = ?", (document_id,))
        return int(n)


def uploaded_id(client: httpx.Client, item: tuple[str, bytes] | Path) -> str:
    response = upload(client, item)
    assert response.status_code in (200, 201, 202), response.text
    [document] = response.json()["documents"]
    return str(document["id"])


_clients: list[httpx.Client] = []


def closing_client(server: ServerProcess) -> httpx.Client:
    """alice's client, closed after the test (see `close_clients`)."""
    client = server.client()
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


@pytest.fixture
def on_tmpfs(
    small_tmpfs: Path, make_server: Callable[..., ServerProcess], fake_llm: FakeOpenAI
) -> Callable[..., ServerProcess]:
    """Factory: a server whose data dir is the small tmpfs (its log stays outside it)."""

    def start(**env: str) -> ServerProcess:
        # The model may take a few seconds on purpose; the client must outwait it.
        return make_server(env=openai_env(fake_llm, DOCINTEL_OPENAI_TIMEOUT="15", **env),
                           data_dir=small_tmpfs)  # fmt: skip

    return start


def test_disk_full_at_the_final_write_requeues_the_document_once_space_returns(
    small_tmpfs: Path, on_tmpfs: Callable[..., ServerProcess]
) -> None:
    server = on_tmpfs(DOCINTEL_STATUS_WRITE_RETRY="1")
    alice = closing_client(server)
    marker = f"FAKE-SCRIPT:full{time.time_ns()}:slow:3,ok"
    doc = uploaded_id(alice, note("report.txt", marker))
    wait_status(alice, doc, "analyzing")

    filler = fill(small_tmpfs)  # while the model is still holding its answer
    wait_for(lambda: f"document {doc}: gave up writing its status" in server.log(),
             "the server giving up on the final write")  # fmt: skip
    assert "the disk was full" in server.log()
    # The server keeps answering, and nothing pretends the document finished.
    assert alice.get("/healthz").status_code == 200
    assert alice.get(f"/documents/{doc}").json()["status"] == "analyzing"

    filler.unlink()  # space returns: no restart, the requeue task notices by itself
    detail = wait_terminal(alice, [doc], timeout=30)[doc]
    assert detail["status"] == "completed", detail
    assert statuses(detail) == [
        "pending", "processing", "analyzing",  # the answer came, but could not be written
        "pending", "processing", "analyzing", "completed",
    ]  # fmt: skip
    requeued = detail["history"][3]["detail"]
    assert requeued.startswith("requeued: the disk was full while it was analyzing"), requeued
    # The full disk did not count against the document: one attempt, the one that completed.
    assert attempts(small_tmpfs / "docintel.db", doc) == 1

    # The worker is alive and takes new work.
    second = uploaded_id(alice, note("second.txt", f"FAKE-SCRIPT:after{time.time_ns()}:ok"))
    assert wait_terminal(alice, [second], timeout=20)[second]["status"] == "completed"
    assert "Traceback" not in server.log()  # each failure is one warning line


def test_a_short_disk_full_is_outlasted_by_the_write_retry(
    small_tmpfs: Path, on_tmpfs: Callable[..., ServerProcess]
) -> None:
    server = on_tmpfs()  # the default: a status write is retried for 30 s
    alice = closing_client(server)
    doc = uploaded_id(alice, note("report.txt", f"FAKE-SCRIPT:brief{time.time_ns()}:slow:2"))
    wait_status(alice, doc, "analyzing")

    filler = fill(small_tmpfs)
    wait_for(lambda: f"document {doc}: its status could not be written" in server.log(),
             "the failed final write")  # fmt: skip
    time.sleep(1)  # a few retries fail
    assert alice.get(f"/documents/{doc}").json()["status"] == "analyzing"
    filler.unlink()

    detail = wait_terminal(alice, [doc], timeout=20)[doc]
    assert detail["status"] == "completed", detail
    assert statuses(detail) == ["pending", "processing", "analyzing", "completed"]
    assert f"document {doc}: status written after" in server.log()


@contextlib.contextmanager
def locked(database: Path) -> Iterator[None]:
    """Hold SQLite's write lock on `database` from a second connection."""
    connection = sqlite3.connect(database, isolation_level=None, timeout=10)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def test_a_database_held_by_another_process_requeues_instead_of_failing(
    make_server: Callable[..., ServerProcess], fake_llm: FakeOpenAI
) -> None:
    server = make_server(env=openai_env(fake_llm, DOCINTEL_OPENAI_TIMEOUT="15",
                                        DOCINTEL_STATUS_WRITE_RETRY="1"))  # fmt: skip
    alice = closing_client(server)
    doc = uploaded_id(alice, note("report.txt", f"FAKE-SCRIPT:lock{time.time_ns()}:slow:1,ok"))
    wait_status(alice, doc, "analyzing")

    with locked(server.data_dir / "docintel.db"):
        # Each write waits out SQLite's 5 s busy timeout, fails, and is tried again.
        wait_for(lambda: f"document {doc}: gave up writing its status" in server.log(),
                 "the server giving up on the final write", timeout=25)  # fmt: skip
        assert "the database was busy" in server.log()
    detail = wait_terminal(alice, [doc], timeout=30)[doc]
    assert detail["status"] == "completed", detail
    assert statuses(detail)[3] == "pending"
    assert detail["history"][3]["detail"].startswith(
        "requeued: the database was busy while it was analyzing"
    )


def open_descriptors(pid: int) -> list[int]:
    return sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))


def test_no_file_descriptors_left_requeues_instead_of_failing(
    make_server: Callable[..., ServerProcess], fake_llm: FakeOpenAI
) -> None:
    """Issue 9, point 4: EMFILE when the extractor is spawned was "Internal error (OSError)"."""
    server = make_server(env=openai_env(fake_llm, DOCINTEL_OPENAI_TIMEOUT="15"))
    assert server.proc is not None
    pid = server.proc.pid
    alice = closing_client(server)
    # The first document holds the only worker while the descriptors run out;
    # the PDF behind it is claimed when there are none left to spawn its parser.
    first = uploaded_id(alice, note("first.txt", f"FAKE-SCRIPT:fd{time.time_ns()}:slow:3"))
    pdf = uploaded_id(alice, PDFS / "002-trivial-libre-office-writer.pdf")
    wait_status(alice, first, "analyzing")

    limit = max(open_descriptors(pid)) + 1
    # The soft limit only: raising a hard limit back needs CAP_SYS_RESOURCE.
    original = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, original[1]))
    hogs: list[socket.socket] = []
    try:
        # Idle connections take every free descriptor below the limit (the attack).
        for _ in range(limit):
            hogs.append(socket.create_connection(("127.0.0.1", server.port)))
        wait_for(lambda: "too many open files" in server.log(),
                 "the PDF's parser failing to start", timeout=20)  # fmt: skip
    finally:
        for hog in hogs:
            hog.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, original)

    details = wait_terminal(alice, [first, pdf], timeout=30)
    assert details[first]["status"] == "completed", details[first]
    detail = details[pdf]
    assert detail["status"] == "completed", detail
    requeues = [h["detail"] for h in detail["history"] if h["status"] == "pending"][1:]
    assert requeues and requeues[0].startswith(
        "requeued: the server had too many open files while it was processing"
    ), detail["history"]
    assert "Internal error" not in str(detail)


@pytest.fixture
def queue_db(tmp_path: Path) -> Iterator[Path]:
    from docintel.core.db import connect, database

    connect(tmp_path / "queue.db")
    yield tmp_path / "queue.db"
    database.close()


def test_a_transient_requeue_does_not_count_the_attempt_and_backs_off(queue_db: Path) -> None:
    from docintel.core import events, queue

    new = queue.NewDocument(id="doc1", owner="alice", filename="a.txt", stored_name="a.txt",
                            size_bytes=1, content_type="text/plain", sha256="0" * 64)  # fmt: skip
    queue.enqueue(new)
    claimed = queue.claim_next()
    assert claimed is not None and claimed.attempts == 1
    assert queue.requeue({"doc1": "the disk was full"}) == ["doc1"]
    assert queue.requeue({"doc1": "the disk was full"}) == []  # no longer in flight: untouched

    # Not claimed again before its time, by any claimer; then it is.
    assert queue.claim_next() is None
    wait = queue.seconds_until_claimable()
    assert wait is not None and 0 < wait <= queue.REQUEUE_BASE_SECONDS
    time.sleep(wait + 0.05)
    again = queue.claim_next()
    assert again is not None and again.attempts == 1  # the requeued attempt was not counted

    # A second requeue in a row waits twice as long.
    queue.requeue({"doc1": "the server had too many open files"})
    wait = queue.seconds_until_claimable()
    assert wait is not None and queue.REQUEUE_BASE_SECONDS < wait <= 2 * queue.REQUEUE_BASE_SECONDS
    details = [e.detail for e in events.history("doc1") if e.status == "pending"]
    assert details[1:] == [
        "requeued: the disk was full while it was processing; next try in 2 s",
        "requeued: the server had too many open files while it was processing; next try in 4 s",
    ]


def test_transient_causes_are_told_from_real_failures(tmp_path: Path) -> None:
    from docintel.core.errors import ExtractionFailed, transient_cause

    database = tmp_path / "held.db"
    with locked(database):
        other = sqlite3.connect(database, timeout=0)
        try:
            with pytest.raises(sqlite3.OperationalError) as busy:
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()
    assert transient_cause(busy.value) == "the database was busy"
    try:  # an error raised while handling one is classified by what lies underneath
        try:
            raise busy.value
        except sqlite3.OperationalError:
            raise ExtractionFailed("wrapped") from None
    except ExtractionFailed as wrapped:
        assert transient_cause(wrapped) == "the database was busy"
    with pytest.raises(FileNotFoundError) as missing:
        (tmp_path / "absent").open()
    assert transient_cause(missing.value) is None
    assert transient_cause(ExtractionFailed("No extractable text was found")) is None
