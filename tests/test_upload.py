"""Uploads through the real server: acceptance, every rejection path, storage on disk."""

from __future__ import annotations

import codecs
import hashlib
import socket

import httpx
import pytest

from tests.conftest import PDFS, TXTS, ServerProcess, upload, wait_terminal


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    data = tmp_path_factory.mktemp("upload") / "data"
    # A small limit keeps the too-large cases quick; the default is 10 MB.
    server = ServerProcess(data, {"DOCINTEL_MAX_UPLOAD_BYTES": "200000"}).start()
    yield server
    server.stop()


@pytest.fixture
def alice(server: ServerProcess) -> httpx.Client:
    with server.client("alice") as client:
        yield client


def test_accepts_txt_and_pdf_and_stores_them_under_the_data_dir(
    server: ServerProcess, alice: httpx.Client
) -> None:
    memo = TXTS / "quarterly-memo.txt"
    pdf = PDFS / "minimal-document.pdf"
    response = upload(alice, memo, pdf)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["errors"] == []
    docs = body["documents"]
    assert [d["filename"] for d in docs] == ["quarterly-memo.txt", "minimal-document.pdf"]
    assert [d["content_type"] for d in docs] == ["text/plain", "application/pdf"]
    assert docs[0]["size_bytes"] == memo.stat().st_size
    assert docs[0]["sha256"] == hashlib.sha256(memo.read_bytes()).hexdigest()
    assert all(d["status"] == "pending" for d in docs)
    stored = server.data_dir / "uploads" / docs[1]["id"] / "minimal-document.pdf"
    assert stored.read_bytes() == pdf.read_bytes()


@pytest.mark.parametrize(
    ("name", "content", "status", "code", "words"),
    [
        ("report.docx", b"PK\x03\x04 zip", 415, "unsupported_type", "'.docx' files"),
        ("notes", b"hello", 415, "unsupported_type", "without an extension"),
        ("fake.pdf", b"just some text, not a pdf", 415, "unsupported_type", "not a PDF"),
        ("binary.txt", bytes(range(256)) * 4, 415, "unsupported_type", "binary data"),
        ("empty.txt", b"", 400, "empty_file", "is empty"),
        ("big.txt", b"a" * 200_001, 413, "file_too_large", "upload limit"),
    ],
)
def test_rejections_have_status_code_and_a_sentence_naming_the_file(
    alice: httpx.Client, name: str, content: bytes, status: int, code: str, words: str
) -> None:
    response = upload(alice, (name, content))
    assert response.status_code == status, response.text
    body = response.json()
    assert body["documents"] == []
    [error] = body["errors"]
    assert error["filename"] == name
    assert error["code"] == code
    assert name in error["message"] and words in error["message"]
    assert body["detail"]["code"] == code


# Two sentences, short enough for the offline summary to keep both, with
# characters outside Latin-1 so that a wrong decoding shows.
UNICODE_TEXT = "The Zürich office paid the €40 invoice on Monday. Everyone said «merci» to Łukasz."


# UTF-32 LE's BOM (FF FE 00 00) starts with UTF-16 LE's (FF FE): both must decode.
BOMS = {
    "utf-32-be": codecs.BOM_UTF32_BE,
    "utf-32-le": codecs.BOM_UTF32_LE,
    "utf-16-be": codecs.BOM_UTF16_BE,
    "utf-16-le": codecs.BOM_UTF16_LE,
    "utf-8": codecs.BOM_UTF8,
}


@pytest.mark.parametrize("encoding", list(BOMS))
def test_unicode_text_with_a_bom_is_accepted_and_decoded(
    alice: httpx.Client, encoding: str
) -> None:
    """UTF-16/32 text is full of NULs: its BOM, not a binary sniff, says it is text."""
    name = f"{encoding}-bom.txt"
    response = upload(alice, (name, BOMS[encoding] + UNICODE_TEXT.encode(encoding)))
    assert response.status_code == 201, response.text
    [doc] = response.json()["documents"]
    detail = wait_terminal(alice, [doc["id"]])[doc["id"]]
    assert detail["status"] == "completed", detail
    # The offline analyzer summarises the decoded text: the sentences come back whole.
    assert "The Zürich office paid the €40 invoice on Monday." in detail["analysis"]["summary"]
    assert "Łukasz" in detail["analysis"]["summary"]


def test_corpus_empty_file_is_rejected(alice: httpx.Client) -> None:
    response = upload(alice, TXTS / "empty.txt")
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "empty_file"


def test_mixed_batch_gives_207_with_documents_and_errors(alice: httpx.Client) -> None:
    response = upload(
        alice, TXTS / "accents-utf8.txt", ("evil.exe", b"MZ\x90\x00"), TXTS / "empty.txt"
    )
    assert response.status_code == 207
    body = response.json()
    assert [d["filename"] for d in body["documents"]] == ["accents-utf8.txt"]
    assert sorted(e["filename"] for e in body["errors"]) == ["empty.txt", "evil.exe"]


def test_no_files_is_400(alice: httpx.Client) -> None:
    response = alice.post("/documents/upload", files=[("other", ("a.txt", b"hi"))])
    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "no_files"


def test_a_body_that_is_not_multipart_is_400_and_one_log_line_at_most(
    server: ServerProcess, alice: httpx.Client
) -> None:
    response = alice.post(
        "/documents/upload",
        content=b"garbage without a boundary",
        headers={"Content-Type": "multipart/form-data; boundary=XB"},
    )
    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "unreadable_file"
    # The parser's own complaint does not reach the log bare, unformatted.
    assert "Expected boundary character" not in server.log()


def test_too_large_is_refused_while_streaming_without_keeping_anything(
    server: ServerProcess, alice: httpx.Client
) -> None:
    """A 5 MB part against a 200 KB limit: refused, nothing left in incoming/ or uploads/."""
    before = set((server.data_dir / "uploads").iterdir())
    response = upload(alice, ("huge.txt", b"x" * 5_000_000), TXTS / "cp1252.txt")
    assert response.status_code == 207
    assert response.json()["errors"][0]["code"] == "file_too_large"
    after = set((server.data_dir / "uploads").iterdir())
    assert len(after - before) == 1  # only cp1252.txt was stored
    assert list((server.data_dir / "incoming").iterdir()) == []


def test_declared_body_far_over_the_limit_is_refused_before_reading(
    server: ServerProcess, alice: httpx.Client
) -> None:
    """Content-Length beyond files × limit: 413 without reading the body."""
    token = alice.headers["Authorization"]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /documents/upload HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: {token}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=b\r\n"
            + b"Content-Length: 99999999999\r\n\r\n"
        )
        reply = b""
        while b"request_too_large" not in reply and (chunk := sock.recv(65536)):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply
    assert b"request_too_large" in reply


def test_cut_off_upload_leaves_no_file_and_no_document(
    server: ServerProcess, alice: httpx.Client
) -> None:
    before_total = alice.get("/documents").json()["total"]
    token = alice.headers["Authorization"]
    body_start = (
        b'--b\r\nContent-Disposition: form-data; name="files"; filename="cut.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n" + b"partial text " * 1000
    )
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /documents/upload HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: {token}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=b\r\n"
            + f"Content-Length: {len(body_start) + 100000}\r\n\r\n".encode()
            + body_start
        )
    # The server notices the disconnect; the next request sees no trace of it.
    assert alice.get("/healthz").status_code == 200
    assert alice.get("/documents").json()["total"] == before_total
    assert list((server.data_dir / "incoming").iterdir()) == []


@pytest.mark.parametrize(
    "hostile",
    [
        "../../etc/passwd.txt",
        "..\\..\\windows\\win.ini.txt",
        "a/b/c/../../x.txt",
        "\x00\x1bevil\r\n.txt",
        "." * 300 + ".txt",
        "名前" * 100 + ".txt",
        ".hidden.txt",
    ],
)
def test_hostile_names_are_kept_in_the_database_but_stored_safely(
    server: ServerProcess, alice: httpx.Client, hostile: str
) -> None:
    response = upload(alice, (hostile, b"Plain text. Nothing more."))
    assert response.status_code == 201, response.text
    doc = response.json()["documents"][0]
    if hostile.isprintable():  # httpx percent-encodes CR, LF and NUL in names
        assert doc["filename"] == hostile
    folder = server.data_dir / "uploads" / doc["id"]
    [stored] = list(folder.iterdir())
    assert stored.resolve().parent == folder.resolve()
    assert not stored.name.startswith(".")
    assert len(stored.name.encode()) <= 160
    assert all(ch.isprintable() for ch in stored.name)
