"""Uploads when resources run out: a full disk (blocks or inodes) and part floods.

The disk cases run the real server on a small tmpfs as its data dir and fill
it with a ballast file (or with empty files, for the inodes); the floods are
sent over a raw socket with chunked transfer encoding, which has no
Content-Length for the server to check up front.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import peewee
import pytest

from docintel.core.storage import is_out_of_space
from tests.conftest import TXTS, ServerProcess, upload, wait_terminal

OFFLINE = {"DOCINTEL_ANALYZER": "offline"}
MB = 1024 * 1024


# --- filling a file system ------------------------------------------------------


def free_bytes(path: Path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def fill(path: Path, leave: int = 0) -> Path:
    """Write a ballast file until `leave` bytes are free (0: until the disk is full)."""
    ballast = path / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        remaining = free_bytes(path) - leave if leave else 1 << 62
        block = b"\0" * (256 * 1024)
        while remaining > 0:
            remaining -= os.write(fd, block[: min(len(block), remaining)])
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return ballast


def fill_inodes(path: Path) -> list[Path]:
    """Create empty files until no inode is left; returns them."""
    made = []
    for i in range(100_000):
        try:
            (path / f"inode-{i}").touch()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
            return made
        made.append(path / f"inode-{i}")
    raise AssertionError("the file system never ran out of inodes")


def text(name: str, size: int) -> tuple[str, bytes]:
    """A plain-text file of about `size` bytes, made of the corpus memo."""
    memo = (TXTS / "quarterly-memo.txt").read_bytes()
    return name, (memo * (size // len(memo) + 1))[:size]


def leftovers(data_dir: Path) -> tuple[set[str], list[Path]]:
    """(document folders under uploads/, files still in incoming/)."""
    return (
        {p.name for p in (data_dir / "uploads").iterdir()},
        list((data_dir / "incoming").iterdir()),
    )


# --- a full disk during an upload --------------------------------------------------


def test_a_batch_that_fills_the_disk_answers_207_with_exactly_what_was_stored(
    tmpfs_upload_dir: Any, make_server: Any
) -> None:
    """Five files; the disk fills during the third: 207 with the first two, nothing else kept."""
    data = tmpfs_upload_dir("16m")
    server = make_server(env=OFFLINE, data_dir=data)
    one, two = text("one.txt", 40_000), text("two.txt", 50_000)
    big = text("big.txt", 4 * MB)
    four, five = text("four.txt", 30_000), text("five.txt", 30_000)
    # Room for the first two and about half of the third; the third's partial
    # file is removed at once, giving its room back to the database.
    ballast = fill(data, leave=len(one[1]) + len(two[1]) + 2 * MB)
    with server.client("alice") as alice:
        response = upload(alice, one, two, big, four, five)
        assert response.status_code == 207, response.text
        body = response.json()
        docs = body["documents"]
        assert [d["filename"] for d in docs] == ["one.txt", "two.txt"]
        assert [d["sha256"] for d in docs] == [
            hashlib.sha256(one[1]).hexdigest(),
            hashlib.sha256(two[1]).hexdigest(),
        ]
        assert [e["filename"] for e in body["errors"]] == ["big.txt", "four.txt", "five.txt"]
        for error in body["errors"]:
            assert error["code"] == "insufficient_storage"
            assert error["filename"] in error["message"]
            assert "disk is full" in error["message"]
        # Nothing half-stored: a folder per accepted document, nothing in incoming/.
        folders, incoming = leftovers(data)
        assert folders == {d["id"] for d in docs}
        assert incoming == []
        assert (data / "uploads" / docs[1]["id"] / "two.txt").read_bytes() == two[1]
        listed = alice.get("/documents").json()
        assert {d["id"] for d in listed["items"]} == {d["id"] for d in docs}
        # Once there is room again, both are analysed like any other.
        ballast.unlink()
        details = wait_terminal(alice, [d["id"] for d in docs], timeout=30)
        assert {d["status"] for d in details.values()} == {"completed"}
    assert "Traceback" not in server.log()


def test_an_upload_on_a_full_disk_answers_507_and_the_server_carries_on(
    tmpfs_upload_dir: Any, make_server: Any
) -> None:
    data = tmpfs_upload_dir("8m")
    server = make_server(env=OFFLINE, data_dir=data)
    ballast = fill(data)
    with server.client("alice") as alice:
        response = upload(alice, TXTS / "quarterly-memo.txt")
        assert response.status_code == 507, response.text
        body = response.json()
        assert body["documents"] == []
        [error] = body["errors"]
        assert error["filename"] == "quarterly-memo.txt"
        assert error["code"] == "insufficient_storage"
        assert body["detail"]["code"] == "insufficient_storage"
        message = body["detail"]["message"]
        assert "'quarterly-memo.txt' was not stored: the server's disk is full" in message
        assert leftovers(data) == (set(), [])
        assert alice.get("/healthz").status_code == 200
        assert alice.get("/documents").json()["total"] == 0
        # Room again: the same upload goes through, nothing to restart.
        ballast.unlink()
        again = upload(alice, TXTS / "quarterly-memo.txt")
        assert again.status_code == 201, again.text
    assert "Traceback" not in server.log()


def test_an_upload_with_no_inode_left_answers_507_naming_the_cause(
    tmpfs_upload_dir: Any, make_server: Any
) -> None:
    data = tmpfs_upload_dir("16m", nr_inodes=64)
    server = make_server(env=OFFLINE, data_dir=data)
    fillers = fill_inodes(data)
    assert free_bytes(data) > MB  # blocks to spare: only the inodes ran out
    with server.client("alice") as alice:
        response = upload(alice, TXTS / "quarterly-memo.txt")
        assert response.status_code == 507, response.text
        detail = response.json()["detail"]
        assert detail["code"] == "insufficient_storage"
        assert "no free inodes" in detail["message"]
        assert leftovers(data) == (set(), [])
        for filler in fillers[:4]:  # a file in incoming/ and a folder in uploads/
            filler.unlink()
        again = upload(alice, TXTS / "quarterly-memo.txt")
        assert again.status_code == 201, again.text
    assert "Traceback" not in server.log()


def test_delete_on_a_full_disk_answers_507_and_keeps_the_document(
    tmpfs_upload_dir: Any, make_server: Any
) -> None:
    data = tmpfs_upload_dir("8m")
    server = make_server(env=OFFLINE, data_dir=data)
    with server.client("alice") as alice:
        created = upload(alice, TXTS / "quarterly-memo.txt")
        assert created.status_code == 201, created.text
        doc_id = created.json()["documents"][0]["id"]
        wait_terminal(alice, [doc_id], timeout=30)
        ballast = fill(data)
        # SQLite must append to its log even to delete a row: no room, no delete.
        refused = alice.delete(f"/documents/{doc_id}")
        assert refused.status_code == 507, refused.text
        detail = refused.json()["detail"]
        assert detail["code"] == "insufficient_storage"
        assert "The document was not deleted: the server's disk is full" in detail["message"]
        kept = alice.get(f"/documents/{doc_id}")
        assert kept.status_code == 200
        assert kept.json()["status"] == "completed"
        assert (data / "uploads" / doc_id / "quarterly-memo.txt").exists()
        ballast.unlink()
        assert alice.delete(f"/documents/{doc_id}").status_code == 204
        assert alice.get(f"/documents/{doc_id}").status_code == 404
        assert not (data / "uploads" / doc_id).exists()
    assert "Traceback" not in server.log()


def test_what_counts_as_a_full_disk(tmp_path: Path) -> None:
    """ENOSPC and EDQUOT from the system, and SQLite's SQLITE_FULL as peewee raises it
    (here from a real database held to a few pages, which fails the same way)."""
    db = peewee.SqliteDatabase(str(tmp_path / "small.db"))
    db.execute_sql("PRAGMA max_page_count = 4")
    db.execute_sql("CREATE TABLE t (x TEXT)")
    with pytest.raises(peewee.OperationalError) as full:
        for _ in range(100):
            db.execute_sql("INSERT INTO t VALUES (?)", ("x" * 4000,))
    db.close()
    assert is_out_of_space(full.value)
    assert is_out_of_space(OSError(errno.ENOSPC, "No space left on device"))
    assert is_out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_out_of_space(OSError(errno.EIO, "Input/output error"))
    assert not is_out_of_space(peewee.OperationalError("database is locked"))
    assert not is_out_of_space(ValueError("database or disk is full"))


# --- part floods and chunked bodies -------------------------------------------------


def test_the_file_limit_is_exact_and_past_it_nothing_is_stored(make_server: Any) -> None:
    """20 files (the default limit) are accepted; 21 are refused whole (413)."""
    server = make_server(env=OFFLINE)
    with server.client("alice") as alice:
        twenty = [(f"note-{i}.txt", b"A short note.") for i in range(20)]
        assert upload(alice, *twenty).status_code == 201
        response = upload(alice, *twenty, ("one-too-many.txt", b"A short note."))
        assert response.status_code == 413, response.text
        body = response.json()
        assert body["documents"] == []
        assert body["errors"] == [
            {
                "filename": "one-too-many.txt",
                "code": "too_many_files",
                "message": body["detail"]["message"],
            }
        ]
        assert "more than 20 files" in body["detail"]["message"]
        assert alice.get("/documents").json()["total"] == 20
    assert list((server.data_dir / "incoming").iterdir()) == []


def vm_kb(pid: int, field: str) -> int:
    """A memory figure of a process from /proc (VmRSS now, VmHWM the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


class ChunkedUpload:
    """POST /documents/upload with a chunked body over a raw socket.

    A thread sends the chunks while the caller reads the answer, as a server
    may answer (and close) before the body ends. `sent` counts the body bytes
    the kernel took before the server stopped reading.
    """

    def __init__(self, server: ServerProcess, token: str, chunks: Iterator[bytes]) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.sock.sendall(
            b"POST /documents/upload HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {token}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=b\r\n"
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        self.sent = 0
        self.chunks = chunks
        self.sender = threading.Thread(target=self._send, daemon=True)
        self.sender.start()

    def _send(self) -> None:
        try:
            for chunk in self.chunks:
                self.sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                self.sent += len(chunk)
            self.sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: what the test expects

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of the server's answer."""
        data = b""
        while b"\r\n\r\n" not in data:
            data += self._recv()
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        while len(body) < int(headers["content-length"]):
            body += self._recv()
        return int(lines[0].split()[1]), headers, body

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the connection without a full answer"
        return chunk

    def close(self) -> None:
        self.sock.close()
        self.sender.join(30)


def parts(count: int, disposition: str) -> Iterator[bytes]:
    """`count` tiny parts, in chunks of about 64 KB, then the closing boundary."""
    batch: list[bytes] = []
    for i in range(count):
        batch.append(
            b"--b\r\nContent-Disposition: form-data; "
            + disposition.format(i=i).encode()
            + b"\r\n\r\nx\r\n"
        )
        if len(batch) == 600:
            yield b"".join(batch)
            batch = []
    yield b"".join(batch) + b"--b--\r\n"


@pytest.mark.parametrize(
    ("disposition", "status", "code"),
    [
        # Rejected files (wrong type): each used to be kept, with its error, until the end.
        ('name="files"; filename="part-{i}.exe"', 413, "too_many_files"),
        # Plain fields, which the upload ignores.
        ('name="field-{i}"', 400, "too_many_parts"),
    ],
)
def test_a_flood_of_tiny_parts_is_refused_early_with_a_small_answer(
    make_server: Any, disposition: str, status: int, code: str
) -> None:
    """The attack's 400,000 parts (34 MB) in a chunked body: refused after the limit,
    with memory and the answer bounded."""
    server = make_server(env=OFFLINE)
    token = server.login()
    assert server.proc is not None
    rss_before = vm_kb(server.proc.pid, "VmRSS")
    total = sum(len(chunk) for chunk in parts(400_000, disposition))
    started = time.monotonic()
    flood = ChunkedUpload(server, token, parts(400_000, disposition))
    try:
        got, headers, body = flood.answer()
    finally:
        flood.close()
    assert time.monotonic() - started < 30
    assert got == status, body[:500]
    assert headers.get("connection") == "close"
    # At most one error per file allowed (20) and the refusal: a few KB, not 47 MB.
    assert len(body) < 20_000
    answer = httpx.Response(got, content=body).json()
    assert answer["documents"] == []
    assert answer["detail"]["code"] == code
    assert len(answer["errors"]) <= 21
    assert answer["errors"][-1]["code"] == code
    # The server stopped reading early (the rest is socket buffers), and its memory
    # barely moved (the peak, VmHWM, against the resident size before).
    assert flood.sent < total // 2
    assert vm_kb(server.proc.pid, "VmHWM") - rss_before < 100 * 1024
    with server.client("alice") as alice:
        assert alice.get("/healthz").status_code == 200
        assert alice.get("/documents").json()["total"] == 0
    assert list((server.data_dir / "incoming").iterdir()) == []


def test_a_chunked_body_over_the_total_cap_is_refused_without_reading_the_rest(
    make_server: Any,
) -> None:
    """No Content-Length to check up front: the bytes are counted as they arrive."""
    limit = 100_000  # per file; the cap is 20 files of it plus 1 MB of framing
    server = make_server(env={**OFFLINE, "DOCINTEL_MAX_UPLOAD_BYTES": str(limit)})
    cap = 20 * limit + MB

    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n\r\n'
        block = b"a" * 65536
        for _ in range(200 * MB // len(block)):  # 200 MB, unless the server stops reading
            yield block

    started = time.monotonic()
    upload_ = ChunkedUpload(server, server.login(), body())
    try:
        got, headers, raw = upload_.answer()
    finally:
        upload_.close()
    assert got == 413, raw[:500]
    assert headers.get("connection") == "close"
    answer = httpx.Response(got, content=raw).json()
    assert answer["detail"]["code"] == "request_too_large"
    assert answer["errors"][-1]["filename"] == "big.txt"
    assert "larger than 20 files of" in answer["detail"]["message"]
    # What the kernel took before the server closed: the cap plus socket buffers.
    assert cap < upload_.sent < cap + 40 * MB
    assert time.monotonic() - started < 30
    assert list((server.data_dir / "incoming").iterdir()) == []
    with server.client("alice") as alice:
        assert alice.get("/healthz").status_code == 200
