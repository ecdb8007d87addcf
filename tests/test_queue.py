"""The queue, on SQLite and PostgreSQL: FIFO, atomic claims under concurrency, requeue after a crash."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from docintel.core import events, queue
from docintel.core.db import connect, database
from docintel.core.models import Document, StatusEvent


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """The queue on each backend: a SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        connect(tmp_path / "queue.db")
    else:
        connect(request.getfixturevalue("postgres_url"))
    yield
    database.close()


def add(n: int, owner: str = "alice") -> list[str]:
    ids = []
    for i in range(n):
        doc = queue.enqueue(
            queue.NewDocument(
                id=f"doc{i:04d}",
                owner=owner,
                filename=f"f{i}.txt",
                stored_name=f"f{i}.txt",
                size_bytes=1,
                content_type="text/plain",
                sha256="0" * 64,
            )
        )
        ids.append(doc.id)
    return ids


def test_claims_are_fifo_and_write_a_processing_event(db: None) -> None:
    ids = add(3)
    claimed = [queue.claim_next() for _ in range(3)]
    assert [d.id for d in claimed] == ids
    assert queue.claim_next() is None
    assert [e.status for e in events.history(ids[0])] == ["pending", "processing"]
    assert claimed[0].attempts == 1


def test_deleted_rows_do_not_reuse_ids(db: None) -> None:
    ids = add(2)
    last = events.last_id()
    Document.get(Document.id == ids[1]).delete_instance()
    add_more = queue.enqueue(
        queue.NewDocument(
            id="later",
            owner="alice",
            filename="x.txt",
            stored_name="x.txt",
            size_bytes=1,
            content_type="text/plain",
            sha256="0" * 64,
        )
    )
    assert events.history(add_more.id)[0].id > last


def test_concurrent_claimers_never_claim_the_same_document(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    connect(path)
    ids = set(add(200))
    database.close()
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer() -> None:
        with database.connection_context():
            while (doc := queue.claim_next()) is not None:
                with lock:
                    claimed.append(doc.id)

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)  # each exactly once
    with database.connection_context():
        assert StatusEvent.select().where(StatusEvent.status == "processing").count() == 200


def test_requeue_puts_interrupted_documents_back_and_gives_up_after_max_attempts(db: None) -> None:
    ids = add(2)
    first = queue.claim_next()
    assert first is not None and first.id == ids[0]
    queue.transition(first.id, ["processing"], "analyzing")
    [requeued] = queue.requeue_interrupted()
    assert requeued.status == "pending"
    assert [e.status for e in events.history(first.id)][-1] == "pending"
    assert "requeued" in events.history(first.id)[-1].detail
    # It comes back first: it kept its place in the queue.
    for attempt in range(2, queue.MAX_ATTEMPTS + 1):
        again = queue.claim_next()
        assert again is not None and again.id == first.id and again.attempts == attempt
        queue.requeue_interrupted()
    doc = Document.get(Document.id == first.id)
    assert doc.status == "failed"
    assert "interrupted 3 times" in doc.error
    assert queue.claim_next().id == ids[1]


def test_transition_is_compare_and_set(db: None) -> None:
    [doc_id] = add(1)
    assert not queue.transition(doc_id, ["processing"], "analyzing")  # still pending
    assert queue.claim_next() is not None
    assert queue.transition(doc_id, ["processing"], "analyzing")
    Document.get(Document.id == doc_id).delete_instance()
    assert not queue.transition(doc_id, ["analyzing"], "completed")
    assert StatusEvent.select().where(StatusEvent.document_id == doc_id).count() == 0


def test_a_claim_of_several_takes_the_oldest_in_order_with_their_events_in_order(db: None) -> None:
    ids = add(5)
    claimed = queue.claim(3)
    assert [d.id for d in claimed] == ids[:3]
    assert all(d.status == "processing" and d.attempts == 1 for d in claimed)
    processing = StatusEvent.select().where(StatusEvent.status == "processing")
    assert [e.document_id for e in processing.order_by(StatusEvent.id)] == ids[:3]
    assert [d.id for d in queue.claim(10)] == ids[3:]
    assert queue.claim(10) == []


def test_finishing_a_document_claims_the_next_in_the_same_call(db: None) -> None:
    ids = add(2)
    assert queue.claim_next() is not None
    moved, claimed = queue.transition_then_claim(ids[0], ["processing"], "failed", error="x")
    assert moved and claimed is not None and claimed.id == ids[1]
    assert [e.status for e in events.history(ids[0])] == ["pending", "processing", "failed"]
    moved, claimed = queue.transition_then_claim(ids[1], ["processing"], "analyzing")
    assert moved and claimed is None


def test_an_expired_lease_is_rescued_and_fails_after_the_attempt_limit(db: None) -> None:
    [doc_id] = add(1)
    for attempt in range(1, queue.MAX_ATTEMPTS + 1):
        [claimed] = queue.claim(1, lease_owner="w1", lease=0.05)
        assert claimed.attempts == attempt
        time.sleep(0.1)  # w1 died: nobody renews
        [rescued] = queue.rescue()
        if attempt < queue.MAX_ATTEMPTS:
            assert rescued.status == "pending"
    assert rescued.status == "failed" and "interrupted 3 times" in (rescued.error or "")
    details = [e.detail for e in events.history(doc_id)]
    assert details.count(
        "requeued: its worker stopped renewing its lease while it was processing"
    ) == (queue.MAX_ATTEMPTS - 1)


def test_a_renewed_lease_holds_and_a_lost_one_fences_its_worker_out(db: None) -> None:
    a, b = add(2)
    [first] = queue.claim(1, lease_owner="w1", lease=0.3)
    for _ in range(4):  # w1 alive: renews every 0.1 s, longer than the lease in all
        time.sleep(0.1)
        assert queue.renew("w1", 0.3) == [first.id]
        assert queue.rescue() == []
    # w1 stops renewing; its lease lapses and w2 takes the document over.
    time.sleep(0.4)
    assert [d.id for d in queue.rescue()] == [first.id]
    assert [d.id for d in queue.claim(2, lease_owner="w2")] == [a, b]
    # w1 comes back: its renewal finds nothing, its writes are refused.
    assert queue.renew("w1") == []
    assert not queue.transition(first.id, ["processing"], "analyzing", lease_owner="w1")
    assert queue.transition(first.id, ["processing"], "analyzing", lease_owner="w2")
    # A finished document holds no lease.
    assert queue.transition(first.id, ["analyzing"], "completed", lease_owner="w2")
    assert queue.renew("w2") == [b]


def test_a_worker_that_lost_its_lease_cannot_release_or_requeue_the_document(db: None) -> None:
    [doc_id] = add(1)
    queue.claim(1, lease_owner="w1", lease=0.05)
    time.sleep(0.1)
    queue.rescue()
    [taken] = queue.claim(1, lease_owner="w2")
    # w1, stopping or meeting a full disk, must not move w2's document.
    assert queue.release([doc_id], lease_owner="w1") == 0
    assert queue.requeue({doc_id: "the disk was full"}, lease_owner="w1") == []
    assert Document.get(Document.id == doc_id).status == "processing"
    assert queue.release([doc_id], lease_owner="w2") == 1
    assert Document.get(Document.id == doc_id).attempts == taken.attempts - 1
