"""Resumable uploads (tus 1.0) at /uploads/, driven by the standard `tuspy` client."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError

from tests.conftest import ServerProcess, wait_terminal
from tests.relay import Relay

MB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


def text_file(path: Path, size: int) -> Path:
    line = b"The committee must review the budget before the end of the quarter. "
    path.write_bytes((line * (size // len(line) + 1))[:size])
    return path


def tus_client(server: ServerProcess, user: str = "alice") -> TusClient:
    token = server.login(user)
    return TusClient(server.url + "/uploads/", headers={"Authorization": f"Bearer {token}"})


def auth(server: ServerProcess, user: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {server.login(user)}", **TUS}


def metadata(name: str) -> str:
    return "filename " + base64.b64encode(name.encode()).decode()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def server(make_server) -> ServerProcess:
    # Extraction keeps the first 50,000 characters: a 9 MB text is analysed quickly.
    return make_server({"DOCINTEL_ANALYZER": "offline", "DOCINTEL_MAX_TEXT_CHARS": "50000"})


def test_a_9_mb_file_in_1_mb_chunks_becomes_a_document_and_is_analysed(
    server: ServerProcess, tmp_path: Path
) -> None:
    path = text_file(tmp_path / "big.txt", 9 * MB)
    with path.open("rb") as stream:
        uploader = tus_client(server).uploader(
            file_stream=stream, chunk_size=MB, metadata={"filename": "big.txt"}
        )
        uploader.upload()
    # The PATCH that completed it answered with the document; HEAD names it too.
    head = httpx.head(uploader.url, headers=auth(server))
    assert head.headers["upload-offset"] == head.headers["upload-length"] == str(9 * MB)
    document_id = head.headers["docintel-document-id"]
    # A client that lost the last answer and sends its (empty) last PATCH again
    # is told where things stand; a PATCH anywhere else is a conflict.
    octets = {**auth(server), "Content-Type": "application/offset+octet-stream"}
    again = httpx.patch(uploader.url, headers={**octets, "Upload-Offset": str(9 * MB)})
    assert again.status_code == 204 and again.headers["docintel-document-id"] == document_id
    early = httpx.patch(uploader.url, headers={**octets, "Upload-Offset": "0"}, content=b"x")
    assert early.status_code == 409 and early.json()["detail"]["code"] == "upload_complete"
    with server.client() as alice:
        detail = wait_terminal(alice, [document_id])[document_id]
        assert detail["status"] == "completed", detail
        doc = alice.get(f"/documents/{document_id}").json()
    assert doc["filename"] == "big.txt" and doc["size_bytes"] == 9 * MB
    assert doc["sha256"] == sha256(path)
    assert "budget" in " ".join(doc["analysis"]["key_topics"]).lower()


def test_an_upload_cut_off_after_3_chunks_resumes_from_the_servers_offset(
    server: ServerProcess, tmp_path: Path
) -> None:
    path = text_file(tmp_path / "resume.txt", 5 * MB + 123)
    with path.open("rb") as stream:
        first = tus_client(server).uploader(
            file_stream=stream, chunk_size=MB, metadata={"filename": "resume.txt"}
        )
        first.upload(stop_at=3 * MB)
    # Then a connection dropped in the middle of the fourth chunk: half of it sent.
    _patch_and_drop(
        server, first.url, offset=3 * MB, data=path.read_bytes()[3 * MB : 3 * MB + MB // 2]
    )
    offset = _offset(server, first.url)
    assert 3 * MB < offset <= 3 * MB + MB // 2  # what arrived before the drop is kept
    # A new client (as after a restart of the program) goes on from the server's offset.
    with path.open("rb") as stream:
        second = tus_client(server).uploader(file_stream=stream, chunk_size=MB, url=first.url)
        assert second.offset == offset
        second.upload()
    document_id = httpx.head(first.url, headers=auth(server)).headers["docintel-document-id"]
    with server.client() as alice:
        assert wait_terminal(alice, [document_id])[document_id]["status"] == "completed"
        assert alice.get(f"/documents/{document_id}").json()["sha256"] == sha256(path)


def test_an_upload_survives_a_server_killed_mid_way(server: ServerProcess, tmp_path: Path) -> None:
    path = text_file(tmp_path / "crash.txt", 3 * MB)
    with path.open("rb") as stream:
        uploader = tus_client(server).uploader(
            file_stream=stream, chunk_size=MB, metadata={"filename": "crash.txt"}
        )
        uploader.upload(stop_at=2 * MB)
        server.kill()
        server.start()
        resumed = tus_client(server).uploader(file_stream=stream, chunk_size=MB, url=uploader.url)
        assert resumed.offset == 2 * MB
        resumed.upload()
    document_id = httpx.head(uploader.url, headers=auth(server)).headers["docintel-document-id"]
    with server.client() as alice:
        assert wait_terminal(alice, [document_id])[document_id]["status"] == "completed"


def test_an_upload_length_over_the_limit_is_refused_up_front(server: ServerProcess) -> None:
    response = httpx.post(
        server.url + "/uploads/",
        headers={
            **auth(server),
            "Upload-Length": str(11 * MB),
            "Upload-Metadata": metadata("a.txt"),
        },
    )
    assert response.status_code == 413
    assert response.json()["detail"]["code"] == "file_too_large"
    assert response.headers["tus-resumable"] == "1.0.0"
    # The standard client sees the same refusal.
    with pytest.raises(TusCommunicationError) as refused:
        big = tus_client(server)
        big.uploader(
            file_stream=_Sized(11 * MB), chunk_size=MB, metadata={"filename": "b.txt"}
        ).upload()
    assert refused.value.status_code == 413


def test_another_user_cannot_see_resume_or_delete_an_upload(server: ServerProcess) -> None:
    alice, bob = auth(server, "alice"), auth(server, "bob")
    created = httpx.post(
        server.url + "/uploads/",
        headers={**alice, "Upload-Length": "100", "Upload-Metadata": metadata("mine.txt")},
    )
    assert created.status_code == 201
    url = server.url + created.headers["location"]
    patch = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    assert httpx.head(url, headers=bob).status_code == 404
    assert httpx.patch(url, headers={**bob, **patch}, content=b"x" * 10).status_code == 404
    assert httpx.delete(url, headers=bob).status_code == 404
    # Untouched: alice goes on, and only she can delete it.
    assert httpx.head(url, headers=alice).headers["upload-offset"] == "0"
    assert httpx.patch(url, headers={**alice, **patch}, content=b"y" * 10).status_code == 204
    assert httpx.delete(url, headers=alice).status_code == 204
    assert httpx.head(url, headers=alice).status_code == 404
    # No token, no access at all.
    assert httpx.head(url, headers=TUS).status_code == 401


def test_the_protocol_rules_are_kept(server: ServerProcess, tmp_path: Path) -> None:
    alice = auth(server)
    options = httpx.options(server.url + "/uploads/")
    assert options.status_code == 204
    assert options.headers["tus-version"] == "1.0.0"
    assert set(options.headers["tus-extension"].split(",")) >= {"creation", "termination"}
    assert options.headers["tus-max-size"] == str(10 * MB)

    def create(name: str, length: int, **headers: str) -> httpx.Response:
        return httpx.post(
            server.url + "/uploads/",
            headers={
                **alice,
                "Upload-Length": str(length),
                "Upload-Metadata": metadata(name),
                **headers,
            },
        )

    assert create("a.txt", 10, **{"Tus-Resumable": "0.2.2"}).status_code == 412
    assert create("photo.png", 10).status_code == 415
    assert create("empty.txt", 0).status_code == 400
    no_name = httpx.post(server.url + "/uploads/", headers={**alice, "Upload-Length": "5"})
    assert no_name.status_code == 400 and no_name.json()["detail"]["code"] == "missing_filename"
    url = server.url + create("a.txt", 10).headers["location"]
    octets = {**alice, "Content-Type": "application/offset+octet-stream"}
    wrong_offset = httpx.patch(url, headers={**octets, "Upload-Offset": "5"}, content=b"12345")
    assert wrong_offset.status_code == 409 and "byte 0" in wrong_offset.json()["detail"]["message"]
    wrong_type = httpx.patch(url, headers={**alice, "Upload-Offset": "0"}, content=b"12345")
    assert wrong_type.status_code == 415
    too_much = httpx.patch(url, headers={**octets, "Upload-Offset": "0"}, content=b"x" * 11)
    assert too_much.status_code == 413
    # The content is checked at the end, as a multipart upload's is: a fake PDF is refused.
    fake = server.url + create("fake.pdf", 9).headers["location"]
    refused = httpx.patch(fake, headers={**octets, "Upload-Offset": "0"}, content=b"not a pdf")
    assert refused.status_code == 415 and "not a PDF" in refused.json()["detail"]["message"]
    assert httpx.head(fake, headers=alice).status_code == 404  # nothing kept of it


def test_unfinished_uploads_expire_and_are_swept(make_server) -> None:
    server = make_server({"DOCINTEL_RESUMABLE_EXPIRY": "1"})
    alice = auth(server)
    created = httpx.post(
        server.url + "/uploads/",
        headers={**alice, "Upload-Length": "100", "Upload-Metadata": metadata("old.txt")},
    )
    upload_id = created.headers["location"].rsplit("/", 1)[1]
    folder = server.data_dir / "resumable" / upload_id
    assert folder.is_dir()
    deadline = time.monotonic() + 15
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not folder.exists()
    assert httpx.head(server.url + created.headers["location"], headers=alice).status_code == 404


def test_the_cli_resumes_an_upload_after_a_dropped_connection(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Over 5 MB, `docintel upload` goes over tus; a cut connection costs one chunk at most."""
    path = text_file(tmp_path / "cli-big.txt", 6 * MB)
    token = server.login()
    with Relay(server.port, delay=0.02) as relay:  # slow enough to cut mid-way
        proc = subprocess.Popen(
            [sys.executable, "-m", "docintel", "upload", "--json", str(path)],
            env={**os.environ, "DOCINTEL_URL": relay.url, "DOCINTEL_TOKEN": token},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert _wait_for_bytes(server, 2 * MB), "the upload never got going"
            relay.cut()  # every connection through the relay, mid-chunk
            out, err = proc.communicate(timeout=90)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert "resuming the upload" in err
    [uploaded] = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert uploaded["event"] == "uploaded" and uploaded["filename"] == "cli-big.txt"
    with server.client() as alice:
        assert wait_terminal(alice, [uploaded["id"]])[uploaded["id"]]["status"] == "completed"
        assert alice.get(f"/documents/{uploaded['id']}").json()["sha256"] == sha256(path)


def test_the_cli_sends_small_files_resumably_when_asked(
    server: ServerProcess, tmp_path: Path
) -> None:
    path = text_file(tmp_path / "small.txt", 3000)
    token = server.login()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "docintel",
            "upload",
            "--resumable",
            "--json",
            str(path),
            str(path.with_name("x.png")),
        ],
        env={**os.environ, "DOCINTEL_URL": server.url, "DOCINTEL_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 1  # x.png does not exist: one rejection
    [uploaded] = [line for line in lines if line["event"] == "uploaded"]
    assert uploaded["size_bytes"] == 3000
    assert "resumable upload" in server.log() and uploaded["id"] in server.log()


def _wait_for_bytes(server: ServerProcess, size: int, timeout: float = 30.0) -> bool:
    """Until some resumable upload on the server holds more than `size` bytes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for data in (server.data_dir / "resumable").glob("*/data"):
            with contextlib.suppress(FileNotFoundError):
                if data.stat().st_size > size:
                    return True
        time.sleep(0.01)
    return False


def _offset(server: ServerProcess, url: str) -> int:
    return int(httpx.head(url, headers=auth(server)).headers["upload-offset"])


def _patch_and_drop(server: ServerProcess, url: str, offset: int, data: bytes) -> None:
    """A PATCH that announces a whole chunk, sends part of it and hangs up."""
    path = httpx.URL(url).path
    token = server.login()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(
        (
            f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {MB}\r\n\r\n"
        ).encode()
        + data
    )
    time.sleep(0.5)  # let the server write what it got
    sock.close()
    deadline = time.monotonic() + 10
    while _offset(server, url) == offset and time.monotonic() < deadline:
        time.sleep(0.1)


class _Sized:
    """A stream that claims `size` bytes: the client sends Upload-Length from it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = {0: offset, 1: self.position + offset, 2: self.size + offset}[whence]
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.position if n < 0 else min(n, self.size - self.position)
        self.position += n
        return b"x" * n
