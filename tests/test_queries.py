"""The service's queries on a populated database: plans, totals, and a replay.

Every query the service runs is captured as it runs (peewee logs its SQL) and
its `EXPLAIN QUERY PLAN` read: none may scan a whole table. No timings are
asserted; `python -m bench queries` prints those.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from docintel.core import db, events, queue
from docintel.core.service import _owned, document_detail, list_documents
from tests.conftest import ServerProcess, read_events

USERS = ("alice", "bob", "carol")
PATHS = {
    "pending": ("pending",),
    "processing": ("pending", "processing"),
    "analyzing": ("pending", "processing", "analyzing"),
    "completed": ("pending", "processing", "analyzing", "completed"),
    "failed": ("pending", "processing", "failed"),
}
MIX = ["completed"] * 6 + ["failed", "pending", "pending", "processing", "analyzing"]
ANALYSIS = ("A summary.", '["a", "b"]', "neutral", '["do it"]', "offline", "offline-1")


def populate(path: Path, documents: int) -> dict[str, list[int]]:
    """Documents of USERS in every status, with their events; event ids per user."""
    db.connect(path)  # the real migrations
    db.database.close()
    now = "2026-01-01T00:00:00.000Z"
    ids: dict[str, list[int]] = {u: [] for u in USERS}
    with sqlite3.connect(path) as con:
        for i in range(documents):
            doc_id = hashlib.md5(str(i).encode()).hexdigest()
            owner, status = USERS[i % 3], MIX[(i // 3) % len(MIX)]
            con.execute(
                "INSERT INTO document (id, owner, filename, stored_name, size_bytes,"
                " content_type, sha256, status, attempts, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, 1, 'text/plain', '', ?, 1, ?, ?)",
                (doc_id, owner, f"f{i}.txt", f"f{i}.txt", status, now, now),
            )
            for step in PATHS[status]:
                cursor = con.execute(
                    "INSERT INTO status_event (document_id, owner, status, at, detail)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (doc_id, owner, step, now, f"{step} {i}"),
                )
                assert cursor.lastrowid is not None
                ids[owner].append(cursor.lastrowid)
            if status == "completed":
                con.execute(
                    "INSERT INTO analysis VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (doc_id, *ANALYSIS, now),
                )
    con.close()
    return ids


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("queries") / "docintel.db"
    populate(path, 3000)
    return path


@pytest.fixture
def database(populated: Path) -> Iterator[Path]:
    db.connect(populated)
    try:
        yield populated
    finally:
        db.database.close()


def plans_of(call: object) -> list[tuple[str, list[str]]]:
    assert callable(call)
    with db.recorded_queries() as recorded:
        call()
    assert recorded, "the call ran no query"
    return [(sql, db.explain(sql, params)) for sql, params in recorded]


def some_id(owner: str = "alice") -> str:
    return str(next(iter(db.execute("SELECT id FROM document WHERE owner = ?", (owner,))))[0])


@pytest.mark.parametrize(
    "what",
    [
        "list pending",
        "list completed+failed",
        "list all",
        "list deep page",
        "detail",
        "status",
        "id prefix",
        "replay",
        "replay of some documents",
        "feed",
        "last id",
        "history",
    ],
)
def test_every_query_uses_an_index(database: Path, what: str) -> None:
    doc = some_id()
    top = events.last_id()
    call = {
        "list pending": lambda: list_documents("alice", ["pending"]),
        "list completed+failed": lambda: list_documents("alice", ["completed", "failed"]),
        "list all": lambda: list_documents("alice"),
        "list deep page": lambda: list_documents("alice", ["pending"], 50, 100),
        "detail": lambda: document_detail("alice", doc),
        "status": lambda: _owned("alice", doc),
        "id prefix": lambda: _owned("alice", doc[:8]),
        "replay": lambda: events.events_after("alice", 0),
        "replay of some documents": lambda: events.events_after("alice", 0, [doc]),
        "feed": lambda: events.events_after(None, top - 50),
        "last id": events.last_id,
        "history": lambda: events.history(doc),
    }[what]
    for sql, plan in plans_of(call):
        assert plan, sql
        scans = [line for line in plan if db.is_full_scan(line)]
        assert not scans, f"{sql}\n{plan}"
        # No full walk of an index either: every step is a search.
        assert not any(line.startswith("SCAN") for line in plan), f"{sql}\n{plan}"


def test_claim_next_uses_an_index(database: Path) -> None:
    with db.database.atomic() as transaction:
        found = plans_of(queue.claim_next)
        transaction.rollback()
    for sql, plan in found:
        assert not any(line.startswith("SCAN") for line in plan), f"{sql}\n{plan}"
    assert any("document_status_seq (status=?)" in line for _, plan in found for line in plan)


def test_the_list_filter_uses_the_owner_status_index(database: Path) -> None:
    (_, page), (total_sql, total) = plans_of(lambda: list_documents("alice", ["pending"]))
    assert any("document_owner_status_seq (owner=? AND status=?)" in x for x in page), page
    assert not any("TEMP B-TREE" in line for line in page), page  # no sort for one status
    # The total reads the kept counts: a primary-key search, not a count of rows.
    assert '"document_count"' in total_sql
    assert total == ["SEARCH t1 USING PRIMARY KEY (owner=? AND status=?)"], total


def test_the_plan_check_catches_a_table_scan(database: Path) -> None:
    plan = db.explain("SELECT * FROM document WHERE filename = ?", ("x",))
    assert any(db.is_full_scan(line) for line in plan), plan


@pytest.mark.parametrize(
    "statuses", [["pending"], ["completed", "failed"], ["processing", "analyzing"], []]
)
def test_the_list_pages_and_total_are_right(database: Path, statuses: list[str]) -> None:
    where = "owner = 'alice'" + (
        f" AND status IN ({','.join(repr(s) for s in statuses)})" if statuses else ""
    )
    expected = [
        r[0] for r in db.execute(f"SELECT id FROM document WHERE {where} ORDER BY seq DESC")
    ]
    assert expected
    pages = []
    offset = 0
    while True:
        page, total = list_documents("alice", statuses, 37, offset)
        assert total == len(expected)
        if not page:
            break
        assert all(d.owner == "alice" and (not statuses or d.status in statuses) for d in page)
        pages += [d.id for d in page]
        offset += 37
    assert pages == expected


def test_replayed_events_match_the_log(database: Path) -> None:
    seen = events.events_after("alice", 0, limit=100_000)
    rows = list(db.execute("SELECT id, status, detail FROM status_event WHERE owner = 'alice'"))
    assert [e.id for e in seen] == [r[0] for r in rows]
    for event, (_, status, detail) in zip(seen, rows, strict=True):
        data = json.loads(event.data)
        assert data["status"] == status
        assert data.get("error" if status == "failed" else "detail") == detail
        assert ("analysis" in data) == (status == "completed")
        if status == "completed":
            assert data["analysis"]["key_topics"] == ["a", "b"]


def assert_totals_are_counts() -> None:
    for owner in USERS:
        for statuses in [[], *([s] for s in PATHS), ["completed", "failed"]]:
            where = "owner = ?" + (
                f" AND status IN ({','.join('?' * len(statuses))})" if statuses else ""
            )
            (count,) = next(
                iter(db.execute(f"SELECT COUNT(*) FROM document WHERE {where}", (owner, *statuses)))
            )
            assert list_documents(owner, statuses, 1)[1] == count, (owner, statuses)


def test_the_totals_follow_every_status_change(tmp_path: Path) -> None:
    db.connect(tmp_path / "docintel.db")
    try:
        for i in range(12):
            queue.enqueue(
                queue.NewDocument(f"{i:032x}", USERS[i % 3], "f.txt", "f.txt", 1, "text/plain", "")
            )
        assert_totals_are_counts()
        claimed = [queue.claim_next() for _ in range(6)]
        assert all(claimed)
        assert_totals_are_counts()
        first, second, third, fourth = (d.id for d in claimed[:4] if d is not None)
        assert queue.transition(first, ["processing"], "analyzing")
        assert queue.transition(second, ["processing"], "failed", error="broken")
        assert queue.transition(
            first,
            ["analyzing"],
            "completed",
            analysis=dict(
                summary="s",
                key_topics=[],
                sentiment="neutral",
                action_items=[],
                analyzer="offline",
                model="m",
            ),
        )
        assert_totals_are_counts()
        queue.release([third])
        queue.requeue_interrupted()
        assert_totals_are_counts()
        from docintel.core.models import Document

        Document.get(Document.id == fourth).delete_instance()
        Document.get(Document.id == first).delete_instance()
        assert_totals_are_counts()
    finally:
        db.database.close()


def test_m004_counts_the_documents_of_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "docintel.db"
    populate(path, 300)
    db.connect(path)
    try:
        for trigger in ("insert", "delete", "update"):  # as before m004
            db.execute(f"DROP TRIGGER document_count_{trigger}")
        db.execute("DROP TABLE document_count")
        db.execute("DELETE FROM migrations WHERE name = 'm004_document_count'")
    finally:
        db.database.close()
    db.connect(path)
    try:
        assert_totals_are_counts()
    finally:
        db.database.close()


def test_m003_applies_to_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db.database.init(str(path), pragmas=db.PRAGMAS)
    db.database.connect()
    db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for migration in (db.m001_initial, db.m002_document_owner_id):  # made before m003
        migration()
        db.execute(
            "INSERT INTO migrations VALUES (?, '2026-01-01T00:00:00.000Z')", (migration.__name__,)
        )
    db.execute("ANALYZE")  # statistics that predate the new index
    db.database.close()
    db.connect(path)
    try:
        indexes = {row[1] for row in db.execute("PRAGMA index_list(document)")}
        assert {"document_owner_status_seq", "document_status_seq"} <= indexes
        applied = {row[0] for row in db.execute("SELECT name FROM migrations")}
        assert applied == {m.__name__ for m in db.MIGRATIONS}
    finally:
        db.database.close()
    db.connect(path)  # and again: nothing to do
    db.database.close()


def test_a_replay_through_a_live_server_delivers_every_event_once_in_order(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    ids = populate(data / "docintel.db", 3000)
    with sqlite3.connect(data / "docintel.db") as con:  # an idle queue: nothing new is written
        con.execute("UPDATE document SET status = 'failed' WHERE status NOT IN ('completed')")
    con.close()
    server = ServerProcess(data, {"DOCINTEL_ANALYZER": "offline"}).start()
    try:
        expected = ids["alice"]
        assert len(expected) > 2 * events.BATCH  # several replay batches
        got = read_events(
            server,
            server.login("alice"),
            params={"last_event_id": "0"},
            until=lambda seen: seen[-1]["id"] >= expected[-1],
        )
    finally:
        server.stop()
    assert [e["id"] for e in got] == expected
    assert all(e["event"] == "status" for e in got)
    completed = [e["data"] for e in got if e["data"]["status"] == "completed"]
    assert completed and all(d["analysis"]["key_topics"] == ["a", "b"] for d in completed)
