"""The whole pipeline through a live server and the real OpenAI SDK against a fake API."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import (
    PDFS,
    TXTS,
    ServerProcess,
    openai_env,
    read_events,
    terminal_for,
    upload,
    wait_status,
    wait_terminal,
)
from tests.fake_openai import FakeOpenAI

STAGES = ["pending", "processing", "analyzing", "completed"]


@pytest.fixture
def alice(llm_server: ServerProcess) -> httpx.Client:
    with llm_server.client("alice") as client:
        yield client


def statuses(detail: dict) -> list[str]:
    return [h["status"] for h in detail["history"]]


def test_multi_file_upload_reaches_completed_with_full_history_and_analysis(
    llm_server: ServerProcess, alice: httpx.Client, fake_llm: FakeOpenAI
) -> None:
    files = [
        TXTS / "quarterly-memo.txt",
        PDFS / "pdflatex-4-pages.pdf",
        TXTS / "utf16le-bom.txt",
        PDFS / "multilang.pdf",
    ]
    response = upload(alice, *files)
    assert response.status_code == 201, response.text
    ids = [d["id"] for d in response.json()["documents"]]
    details = wait_terminal(alice, ids)
    for doc_id in ids:
        detail = details[doc_id]
        assert detail["status"] == "completed", detail
        assert statuses(detail) == STAGES
        assert detail["error"] is None
        analysis = detail["analysis"]
        assert set(analysis) == {
            "summary",
            "key_topics",
            "sentiment",
            "action_items",
            "analyzer",
            "model",
        }
        assert analysis["analyzer"] == "openai" and analysis["model"] == "gpt-4.1"
        assert analysis["sentiment"] in ("positive", "negative", "neutral", "mixed")
        assert analysis["summary"] and analysis["key_topics"]
    sent = [r for r in fake_llm.requests if r["model"] == "gpt-4.1"]
    seen = "\n".join(str(m["content"]) for r in sent for m in r["messages"])
    assert "Leeds" in seen  # the memo's text
    assert "certificate" in seen  # the UTF-16 file, decoded
    assert "你好世界" in seen  # CJK from the PDF
    assert "Hello, here is some text without a meaning" in seen


def test_one_worker_starts_documents_in_upload_order(
    llm_server: ServerProcess, alice: httpx.Client
) -> None:
    ids = []
    for i in range(5):
        text = f"Document number {i}. FAKE-SCRIPT:fifo{i}-{time.time_ns()}:slow:0.2"
        ids += [
            d["id"] for d in upload(alice, (f"fifo-{i}.txt", text.encode())).json()["documents"]
        ]
    wait_terminal(alice, ids)
    token = alice.headers["Authorization"].split()[1]
    events = read_events(
        llm_server,
        token,
        params=[("last_event_id", 0)] + [("document_id", i) for i in ids],
        until=terminal_for(ids),
    )
    started = [e["data"]["document_id"] for e in events if e["data"]["status"] == "processing"]
    assert started == ids


@pytest.mark.parametrize(
    ("script", "status", "calls", "reason"),
    [
        ("500,ok", "completed", 2, None),
        ("429,ok", "completed", 2, None),
        ("500,500", "failed", 2, "service failed"),
        ("malformed,ok", "completed", 2, None),
        ("malformed,malformed", "failed", 2, "does not match the analysis schema"),
        ("schema,schema", "failed", 2, "does not match the analysis schema"),
    ],
)
def test_llm_faults_are_retried_once_then_fail_with_the_reason(
    alice: httpx.Client,
    fake_llm: FakeOpenAI,
    script: str,
    status: str,
    calls: int,
    reason: str | None,
) -> None:
    marker = f"t{time.time_ns()}"
    text = f"A short note about faults. FAKE-SCRIPT:{marker}:{script} The end."
    [doc] = upload(alice, ("fault.txt", text.encode())).json()["documents"]
    detail = wait_terminal(alice, [doc["id"]])[doc["id"]]
    assert detail["status"] == status, detail
    assert len(fake_llm.calls_for(marker)) == calls
    if reason:
        assert statuses(detail) == ["pending", "processing", "analyzing", "failed"]
        assert reason in detail["error"]
        assert detail["history"][-1]["detail"] == detail["error"]
        assert detail["analysis"] is None
    else:
        assert detail["analysis"]["analyzer"] == "openai"


def test_stream_shows_every_transition_in_order_and_the_analysis_on_completed(
    llm_server: ServerProcess, alice: httpx.Client
) -> None:
    token = alice.headers["Authorization"].split()[1]
    files = [TXTS / "complaint-negative.txt", PDFS / "crazyones-pdfa.pdf"]
    ids = [d["id"] for d in upload(alice, *files).json()["documents"]]
    events = read_events(llm_server, token, params={"last_event_id": 0}, until=terminal_for(ids))
    ours = [e for e in events if e["data"]["document_id"] in ids]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert all(e["event"] == "status" for e in ours)
    for doc_id, path in zip(ids, files, strict=True):
        mine = [e["data"] for e in ours if e["data"]["document_id"] == doc_id]
        assert [e["status"] for e in mine] == STAGES
        assert all(e["filename"] == path.name for e in mine)
        assert mine[-1]["analysis"]["model"] == "gpt-4.1"
        assert all("analysis" not in e for e in mine[:-1])


def test_live_stream_without_last_event_id_starts_at_the_end(
    llm_server: ServerProcess, alice: httpx.Client
) -> None:
    """A fresh client gets new events only; the ids it sees are all newer than the upload."""
    import threading

    token = alice.headers["Authorization"].split()[1]
    got: list[dict] = []
    ids: list[str] = []

    def listen() -> None:
        got.extend(read_events(llm_server, token, until=lambda ev: ids and terminal_for(ids)(ev)))

    before = alice.get("/healthz").json()["streams"]
    listener = threading.Thread(target=listen)
    listener.start()
    deadline = time.monotonic() + 10
    while alice.get("/healthz").json()["streams"] <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    ids.extend(d["id"] for d in upload(alice, TXTS / "accents-utf8.txt").json()["documents"])
    listener.join(30)
    assert [e["data"]["status"] for e in got if e["data"]["document_id"] == ids[0]] == STAGES


def test_users_see_only_their_own_documents_everywhere(
    llm_server: ServerProcess, alice: httpx.Client
) -> None:
    [doc] = upload(alice, TXTS / "utf8-bom.txt").json()["documents"]
    wait_terminal(alice, [doc["id"]])
    with llm_server.client("bob") as bob:
        assert doc["id"] not in [d["id"] for d in bob.get("/documents").json()["items"]]
        for method, path in [
            ("GET", f"/documents/{doc['id']}"),
            ("GET", f"/documents/{doc['id']}/status"),
            ("DELETE", f"/documents/{doc['id']}"),
            ("GET", f"/documents/stream?document_id={doc['id']}"),
        ]:
            response = bob.request(method, path)
            assert response.status_code == 404, (method, path)
            assert response.json()["detail"]["code"] == "not_found"
        bob_token = bob.headers["Authorization"].split()[1]
        [own] = upload(bob, ("bob.txt", b"Bob's own note. Short.")).json()["documents"]
        # Bob's full replay carries only his own document's events, none of Alice's.
        bob_events = read_events(
            llm_server, bob_token, params={"last_event_id": 0}, until=terminal_for([own["id"]])
        )
    assert {e["data"]["document_id"] for e in bob_events} == {own["id"]}
    assert alice.get(f"/documents/{doc['id']}").status_code == 200


def test_list_filters_by_status_and_paginates_newest_first(alice: httpx.Client) -> None:
    ids = [
        d["id"]
        for d in upload(alice, ("l1.txt", b"One. Two."), ("l2.txt", b"Three. Four.")).json()[
            "documents"
        ]
    ]
    wait_terminal(alice, ids)
    page = alice.get("/documents", params={"limit": 1}).json()
    assert page["limit"] == 1 and page["offset"] == 0 and len(page["items"]) == 1
    assert page["items"][0]["id"] == ids[1]  # newest first
    second = alice.get("/documents", params={"limit": 1, "offset": 1}).json()
    assert second["items"][0]["id"] == ids[0]
    completed = alice.get(
        "/documents", params=[("status", "completed"), ("status", "failed")]
    ).json()
    assert {d["status"] for d in completed["items"]} <= {"completed", "failed"}
    assert completed["total"] >= 2
    assert alice.get("/documents", params={"status": "bogus"}).status_code == 422
    status = alice.get(f"/documents/{ids[0]}/status").json()
    assert (
        set(status) == {"id", "status", "updated_at", "error"} and status["status"] == "completed"
    )


def test_delete_of_a_finished_document_removes_file_row_and_history(
    llm_server: ServerProcess, alice: httpx.Client
) -> None:
    [doc] = upload(alice, TXTS / "cp1252.txt").json()["documents"]
    wait_terminal(alice, [doc["id"]])
    folder = llm_server.data_dir / "uploads" / doc["id"]
    assert folder.exists()
    assert alice.delete(f"/documents/{doc['id']}").status_code == 204
    assert not folder.exists()
    assert alice.get(f"/documents/{doc['id']}").status_code == 404
    assert alice.delete(f"/documents/{doc['id']}").status_code == 404


def test_delete_while_analysing_drops_the_result(
    llm_server: ServerProcess, alice: httpx.Client, fake_llm: FakeOpenAI
) -> None:
    marker = f"del{time.time_ns()}"
    [doc] = upload(alice, ("slow.txt", f"Slow one. FAKE-SCRIPT:{marker}:slow:2".encode())).json()[
        "documents"
    ]
    wait_status(alice, doc["id"], "analyzing")
    assert alice.delete(f"/documents/{doc['id']}").status_code == 204
    assert not (llm_server.data_dir / "uploads" / doc["id"]).exists()
    # The worker finishes its LLM call, finds the document gone and moves on.
    [after] = upload(alice, ("next.txt", b"The next document. It completes.")).json()["documents"]
    assert wait_terminal(alice, [after["id"]])[after["id"]]["status"] == "completed"
    assert alice.get(f"/documents/{doc['id']}").status_code == 404
    assert "Traceback" not in llm_server.log()


def test_restart_finishes_pending_and_interrupted_documents(make_server, tmp_path) -> None:
    with FakeOpenAI(delay=1.0) as slow:
        server: ServerProcess = make_server(openai_env(slow))
        with server.client() as alice:
            ids = [
                d["id"]
                for d in upload(
                    alice, *((f"r{i}.txt", b"Restart me. Please.") for i in range(3))
                ).json()["documents"]
            ]
            wait_status(alice, ids[0], "analyzing")
        server.kill()  # mid-analysis, two more pending
        server.start()
        with server.client() as alice:
            details = wait_terminal(alice, ids)
    assert all(d["status"] == "completed" for d in details.values())
    first = statuses(details[ids[0]])
    assert first == [
        "pending",
        "processing",
        "analyzing",
        "pending",
        "processing",
        "analyzing",
        "completed",
    ]
    assert "requeued" in details[ids[0]]["history"][3]["detail"]
    assert statuses(details[ids[2]]) == STAGES


def test_reconnect_with_last_event_id_after_restart_gets_exactly_the_missed_events(
    make_server,
) -> None:
    server: ServerProcess = make_server({"DOCINTEL_ANALYZER": "offline"})
    with server.client() as alice:
        token = alice.headers["Authorization"].split()[1]
        [first] = upload(alice, TXTS / "quarterly-memo.txt").json()["documents"]
        seen = read_events(
            server, token, params={"last_event_id": 0}, until=terminal_for([first["id"]])
        )
        last_seen = seen[-1]["id"]
        server.stop()
        server.start()
        [second] = upload(alice, TXTS / "complaint-negative.txt").json()["documents"]
        wait_terminal(alice, [second["id"]])
        missed = read_events(
            server,
            token,
            headers={"Last-Event-ID": str(last_seen)},
            until=terminal_for([second["id"]]),
        )
        everything = read_events(
            server, token, params={"last_event_id": 0}, until=terminal_for([second["id"]])
        )
    assert [e["id"] for e in missed] == [e["id"] for e in everything if e["id"] > last_seen]
    assert [e["data"]["status"] for e in missed] == STAGES
    assert all(e["data"]["document_id"] == second["id"] for e in missed)
    assert missed[0]["id"] > last_seen


def test_server_log_never_carries_the_api_key_tokens_or_document_text(
    llm_server: ServerProcess, alice: httpx.Client
) -> None:
    secret_text = (
        f"Confidential merger codename {time.time_ns()}. FAKE-SCRIPT:s{time.time_ns()}:401"
    )
    [doc] = upload(alice, ("secret.txt", secret_text.encode())).json()["documents"]
    detail = wait_terminal(alice, [doc["id"]])[doc["id"]]
    assert detail["status"] == "failed"
    assert "Authentication with the language model service failed" in detail["error"]
    log = llm_server.log()
    assert "sk-test-key-never-logged" not in log
    assert "Confidential merger codename" not in log
    assert alice.headers["Authorization"].split()[1] not in log
    assert "sk-test-key-never-logged" not in detail["error"]


def test_two_workers_run_concurrently_and_still_start_in_fifo_order(make_server) -> None:
    with FakeOpenAI(delay=0.8) as slow:
        # --workers on the command line overrides DOCINTEL_WORKERS.
        server: ServerProcess = make_server(
            openai_env(slow, DOCINTEL_WORKERS="1"), args=["--workers", "2"]
        )
        with server.client() as alice:
            ids = []
            for i in range(4):
                ids += [
                    d["id"]
                    for d in upload(alice, (f"w{i}.txt", b"Work item. Short.")).json()["documents"]
                ]
            wait_terminal(alice, ids)
            token = alice.headers["Authorization"].split()[1]
            events = read_events(
                server, token, params={"last_event_id": 0}, until=terminal_for(ids)
            )
    started = [e["data"]["document_id"] for e in events if e["data"]["status"] == "processing"]
    assert started == ids
    # Overlap: some document started analysing before the previous one completed.
    in_flight, most = set(), 0
    for e in events:
        status, doc = e["data"]["status"], e["data"]["document_id"]
        if status == "analyzing":
            in_flight.add(doc)
        elif status == "completed":
            in_flight.discard(doc)
        most = max(most, len(in_flight))
    assert most == 2


def test_delete_stops_the_work_so_the_queue_moves_on(make_server) -> None:
    with FakeOpenAI() as fake:
        server: ServerProcess = make_server(openai_env(fake, DOCINTEL_OPENAI_TIMEOUT="120"))
        with server.client() as alice:
            marker = f"hang{time.time_ns()}"
            [stuck] = upload(
                alice, ("hang.txt", f"Hangs. FAKE-SCRIPT:{marker}:slow:90".encode())
            ).json()["documents"]
            wait_status(alice, stuck["id"], "analyzing")
            # `analyzing` commits while the call starts: wait until the model has it.
            deadline = time.monotonic() + 10
            while not fake.calls_for(marker) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert alice.delete(f"/documents/{stuck['id']}").status_code == 204
            [nxt] = upload(alice, ("next.txt", b"Next in line. Short.")).json()["documents"]
            # Without cancelling the deleted document's LLM call, this waits 90 s.
            assert wait_terminal(alice, [nxt["id"]], timeout=30)[nxt["id"]]["status"] == "completed"
        assert len(fake.calls_for(marker)) == 1


def test_a_clean_stop_requeues_in_flight_work_without_counting_an_attempt(make_server) -> None:
    with FakeOpenAI() as fake:
        server: ServerProcess = make_server(openai_env(fake, DOCINTEL_OPENAI_TIMEOUT="120"))
        marker = f"stop{time.time_ns()}"
        with server.client() as alice:
            [doc] = upload(
                alice, ("long.txt", f"Long analysis. FAKE-SCRIPT:{marker}:slow:90,ok".encode())
            ).json()["documents"]
            wait_status(alice, doc["id"], "analyzing")
        server.stop()  # SIGINT: a clean stop, with the document mid-analysis
        server.start()
        with server.client() as alice:
            detail = wait_terminal(alice, [doc["id"]])[doc["id"]]
    assert detail["status"] == "completed"
    assert statuses(detail) == [
        "pending",
        "processing",
        "analyzing",
        "pending",
        "processing",
        "analyzing",
        "completed",
    ]
    assert (
        detail["history"][3]["detail"] == "requeued: the server was stopped while it was analyzing"
    )
    assert detail["history"][4]["detail"] == "extracting text (attempt 1)"  # not counted
