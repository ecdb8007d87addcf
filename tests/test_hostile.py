"""Hostile input through the live server: the whole corpus plus generated nasties.

Decompression bombs, deep nesting, thousands of pages, memory hogs, truncated
and fake files, binary "text", path-traversal and unicode names. Each must end
in a clear state (rejected with a 4xx, or `failed` with a reason a user can act
on, or `completed`), never a 5xx or a stuck document, while the server keeps
answering /healthz and writes nothing outside its data dir.
"""

from __future__ import annotations

import importlib.util
import random
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from docintel.core.storage import safe_name
from tests import pdfgen
from tests.conftest import PDFS, TERMINAL, TXTS, FakeOpenAI, ServerProcess, openai_env

TOKEN = uuid.uuid4().hex[:8]  # in every generated name, to find strays anywhere
MEMORY_MB = 400  # enough for every corpus file, not for the memory bomb
BATCH = 10


def generated(root: Path) -> dict[str, tuple[bytes, str, str]]:
    """name → (content, expected outcome, words its reason or history must contain)."""
    cut = (PDFS / "pdflatex-4-pages.pdf").read_bytes()
    noise = random.Random(4)
    text = b"A harmless note. It has two sentences and one name that tries to escape."
    return {
        "bomb-400MB.pdf": (pdfgen.bomb_pdf(400), "failed", "decompression bomb"),
        "bomb-many-streams.pdf": (pdfgen.bomb_pdf(70, streams=10), "failed", "decompression bomb"),
        # Under pypdf's per-stream cap: it inflates 60 MB of spaces and finds no text.
        "bomb-60MB-blank.pdf": (pdfgen.bomb_pdf(60), "failed", "no extractable text"),
        "bomb-memory.pdf": (pdfgen.bomb_pdf(70, pages=10), "failed", f"more than {MEMORY_MB} MB"),
        "nested-content.pdf": (pdfgen.nested_pdf(100_000), "failed", "too deeply nested"),
        "nested-object.pdf": (
            pdfgen.nested_pdf(100_000, in_object=True),
            "failed",
            "too deeply nested",
        ),
        "5000-pages.pdf": (
            pdfgen.many_pages_pdf(5000),
            "completed",
            "from 2000 of 5000 pages (truncated",
        ),
        "wrong-xref.pdf": (
            pdfgen.text_pdf(["Recovered despite a wrong xref."], xref_shift=37),
            "completed",
            "Recovered despite a wrong xref",
        ),
        "truncated.pdf": (cut[: int(len(cut) * 0.6)], "failed", "damaged"),
        "garbage-after-header.pdf": (b"%PDF-1.7\n" + noise.randbytes(20_000), "failed", "damaged"),
        "header-only.pdf": (b"%PDF-1.4\n%%EOF\n", "failed", "damaged"),
        "fake.pdf": (b"Just text pretending to be a PDF.\n" * 20, "415", "not a PDF"),
        "binary.txt": (bytes(range(256)) * 64, "415", "binary"),
        "no-extension": (text, "415", "not supported"),
        f"../../../escape-up-{TOKEN}.txt": (text, "completed", ""),
        f"..\\..\\..\\escape-back-{TOKEN}.txt": (text, "completed", ""),
        f"{root}/absolute-{TOKEN}.txt": (text, "completed", ""),
        f"résumé – 履歴書 {TOKEN}.txt": (text, "completed", ""),
        f"emoji 📄🔥 {TOKEN}.txt": (text, "completed", ""),
        f"rtl-\u202etxt.exe\u202c-{TOKEN}.txt": (text, "completed", ""),
        f"zero\u200bwidth\u200d-{TOKEN}.txt": (text, "completed", ""),
        f"semi;colon'apostrophe%22-{TOKEN}.txt": (text, "completed", ""),
        f"{'L' * 300}-{TOKEN}.txt": (text, "completed", ""),
        f"   .{TOKEN}.txt": (text, "completed", ""),
    }


# What the corpus README promises for the encrypted and image-only files.
CORPUS_FAILS = {
    "libreoffice-writer-password.pdf": "password-protected",
    "grayscale-image.pdf": "no extractable text",
    "imagemagick-CCITTFaxDecode.pdf": "no extractable text",
}
if importlib.util.find_spec("cryptography") is None:
    CORPUS_FAILS["r6-empty-password.pdf"] = "cryptography"


class HealthPoller(threading.Thread):
    """Polls /healthz back to back, recording (ok, seconds, error) per request."""

    def __init__(self, url: str) -> None:
        super().__init__(name="healthz-poller", daemon=True)
        self.url = url + "/healthz"
        self.stopping = threading.Event()
        self.polls: list[tuple[bool, float, str]] = []

    def run(self) -> None:
        with httpx.Client(timeout=2.0) as client:
            while not self.stopping.is_set():
                started = time.perf_counter()
                try:
                    response = client.get(self.url)
                    ok, error = response.status_code == 200, str(response.status_code)
                except httpx.HTTPError as exc:
                    ok, error = False, repr(exc)
                self.polls.append((ok, time.perf_counter() - started, error))
                self.stopping.wait(0.02)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join(timeout=10)


@dataclass
class Outcome:
    server: ServerProcess
    root: Path
    expected: dict[str, tuple[str, str]]
    responses: list[httpx.Response] = field(default_factory=list)
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)  # filename → document
    rejected: dict[str, dict[str, Any]] = field(default_factory=dict)  # filename → error
    details: dict[str, dict[str, Any]] = field(default_factory=dict)  # filename → detail
    polls: list[tuple[bool, float, str]] = field(default_factory=list)
    status_codes: list[int] = field(default_factory=list)
    before: dict[str, tuple[int, float]] = field(default_factory=dict)
    after: dict[str, tuple[int, float]] = field(default_factory=dict)


def snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, float]]:
    """Every path under root (but `skip`) → (size, mtime)."""
    tree = {}
    for path in root.rglob("*"):
        if any(path == s or path.is_relative_to(s) for s in skip):
            continue
        stat = path.lstat()
        tree[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime)
    return tree


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    root = tmp_path_factory.mktemp("hostile")
    files = generated(root)
    inputs = root / "inputs"
    inputs.mkdir()
    for n, (content, _, _) in enumerate(files.values()):
        (inputs / f"generated-{n}.bin").write_bytes(content)  # kept to reproduce a failure
    uploads = [(name, content) for name, (content, _, _) in files.items()]
    uploads += [
        (p.name, p.read_bytes()) for p in sorted(PDFS.glob("*.pdf")) + sorted(TXTS.glob("*.txt"))
    ]
    assert len(uploads) > 50, f"corpus not found at {PDFS.parent}"
    expected = {name: (status, words) for name, (_, status, words) in files.items()}
    expected["empty.txt"] = ("400", "empty")

    with FakeOpenAI() as fake:
        server = ServerProcess(
            root / "data",
            openai_env(
                fake,
                DOCINTEL_WORKERS="2",
                DOCINTEL_EXTRACT_MEMORY_MB=str(MEMORY_MB),
            ),
        ).start()
        result = Outcome(server, root, expected)
        skip = (server.data_dir, server.log_path)
        result.before = snapshot(root, skip)
        try:
            with server.client() as alice, HealthPoller(server.url) as poller:
                for i in range(0, len(uploads), BATCH):
                    files_part = [
                        ("files", (name, content)) for name, content in uploads[i : i + BATCH]
                    ]
                    response = alice.post("/documents/upload", files=files_part)
                    result.responses.append(response)
                    body = response.json()
                    result.accepted.update({d["filename"]: d for d in body.get("documents", [])})
                    result.rejected.update({e["filename"]: e for e in body.get("errors", [])})
                wait_all_terminal(alice, result, timeout=100)
                for name, document in result.accepted.items():
                    response = alice.get(f"/documents/{document['id']}")
                    result.status_codes.append(response.status_code)
                    result.details[name] = response.json()
            result.polls = poller.polls
            result.after = snapshot(root, skip)
            yield result
        finally:
            server.stop()


def wait_all_terminal(client: httpx.Client, result: Outcome, timeout: float) -> None:
    """Poll the list until every accepted document is completed or failed."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/documents", params={"limit": 500})
        result.status_codes.append(response.status_code)
        items = response.json()["items"]
        open_ = [d["filename"] for d in items if d["status"] not in TERMINAL]
        if len(items) == len(result.accepted) and not open_:
            return
        assert time.monotonic() < deadline, f"stuck after {timeout} s: {open_}"
        time.sleep(0.2)


def test_no_request_got_a_5xx(outcome: Outcome) -> None:
    statuses = [r.status_code for r in outcome.responses] + outcome.status_codes
    assert all(s < 500 for s in statuses), statuses
    assert {r.status_code for r in outcome.responses} <= {201, 207}  # each batch had good files


def test_every_file_was_accepted_or_rejected_with_a_reason(outcome: Outcome) -> None:
    assert (
        len(outcome.accepted) + len(outcome.rejected)
        == len(outcome.expected) + len(list(PDFS.glob("*.pdf")) + list(TXTS.glob("*.txt"))) - 1
    )  # empty.txt is in both
    for name, (status, words) in outcome.expected.items():
        if status.isdigit():
            error = outcome.rejected.get(name)
            assert error is not None, f"{name} should have been rejected"
            assert words in error["message"], error
            assert error["code"] in ("unsupported_type", "empty_file"), error
        else:
            assert name in outcome.accepted, f"{name} was rejected: {outcome.rejected.get(name)}"


def test_every_document_ends_in_a_clear_state(outcome: Outcome) -> None:
    wrong = {}
    for name, detail in outcome.details.items():
        status, words = outcome.expected.get(name, ("", ""))
        if detail["status"] not in TERMINAL:
            wrong[name] = detail["status"]
        elif detail["status"] == "failed" and (
            not detail["error"] or "Internal error" in detail["error"]
        ):
            wrong[name] = detail["error"]
        elif status and detail["status"] != status:
            wrong[name] = (detail["status"], detail["error"])
        elif words and words.lower() not in story(detail).lower():
            wrong[name] = (detail["status"], detail["error"], f"no {words!r}")
        history = [h["status"] for h in detail["history"]]
        if history[0] != "pending" or history[-1] != detail["status"]:
            wrong[name] = history
    assert wrong == {}


def story(detail: dict[str, Any]) -> str:
    """Everything a user reads about a document: reason, history, analysis summary."""
    analysis = detail["analysis"] or {}
    parts = [detail["error"] or "", analysis.get("summary", "")]
    return " ".join(parts + [h["detail"] or "" for h in detail["history"]])


def test_encrypted_and_image_only_corpus_files_say_why(outcome: Outcome) -> None:
    for name, words in CORPUS_FAILS.items():
        detail = outcome.details[name]
        assert detail["status"] == "failed" and words in detail["error"].lower(), (
            name,
            detail["error"],
        )
    assert "scanned image" in outcome.details["grayscale-image.pdf"]["error"]
    for name in ("r2-empty-password.pdf", "issue-297.pdf", "GeoTopo-komprimiert.pdf"):
        assert outcome.details[name]["status"] == "completed", (
            name,
            outcome.details[name]["error"],
        )


def test_the_server_answered_healthz_throughout(outcome: Outcome) -> None:
    polls = outcome.polls
    latencies = sorted(seconds for _, seconds, _ in polls)
    print(
        f"\n/healthz during the hostile batch: {len(polls)} polls, "
        f"median {statistics.median(latencies) * 1000:.1f} ms, "
        f"p95 {latencies[int(len(latencies) * 0.95)] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )
    assert len(polls) >= 10
    assert [error for ok, _, error in polls if not ok] == []
    assert httpx.get(outcome.server.url + "/healthz").status_code == 200
    assert "Traceback" not in outcome.server.log()


def test_nothing_was_written_outside_the_data_dir(outcome: Outcome) -> None:
    assert outcome.after == outcome.before
    assert list(Path.cwd().rglob(f"*{TOKEN}*")) == []  # the server's working directory
    uploads = outcome.server.data_dir / "uploads"
    layout = {str(p.relative_to(uploads)) for p in uploads.rglob("*") if p.is_file()}
    expected = {f"{d['id']}/{safe_name(name)}" for name, d in outcome.accepted.items()}
    assert layout == expected
    assert {p.name for p in uploads.iterdir()} == {d["id"] for d in outcome.accepted.values()}
    assert all(p.is_dir() for p in uploads.iterdir())
    # A traversal name is kept as the document's name but never as a path.
    escaped = [n for n in outcome.accepted if "escape" in n or "absolute" in n]
    assert len(escaped) == 3
    for name in escaped:
        stored = safe_name(name)
        assert "/" not in stored and "\\" not in stored and ".." not in stored, stored
    for path in outcome.server.data_dir.rglob(f"*{TOKEN}*"):
        assert path.parent.parent == uploads, path
