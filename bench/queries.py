"""Queries at 100k documents: a filtered list, a 100k-event replay, and every plan.

(a) `DocumentService.list` (the route's core call: one page and its total) for
    one user's `pending` documents among 100k, against the same call at 1k.
(b) A replay of 100k events to one SSE client of a live server
    (`?last_event_id=0`, read with a raw socket), against reading the same rows
    (the same join) with the `sqlite3` module.
(c) `EXPLAIN QUERY PLAN` of every query the service runs, captured from peewee
    as it runs them; a `SCAN` of a table without an index is flagged.

The data is written straight into a real data dir (the schema by the real
migrations, the rows by bulk inserts): 3 users, documents in every status,
each with the events its status implies, analyses for the completed ones.

    python -m bench queries [--tiny]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from docintel.core import db, events, queue
from docintel.core.config import Settings
from docintel.core.service import (
    DocumentService,
    _owned,
    document_detail,
    list_documents,
    missing_documents,
)
from tests.conftest import ServerProcess
from tests.test_queries import PATHS, USERS

# Out of 20 documents: 12 completed, 2 failed, 3 pending, 1 processing, 2 analyzing.
MIX = ["completed"] * 12 + ["failed"] * 2 + ["pending"] * 3 + ["processing"] + ["analyzing"] * 2
DETAIL = {
    "pending": "queued",
    "processing": "extracting text (attempt 1)",
    "analyzing": "analyzing 1234 characters",
    "completed": "done",
    "failed": "Could not extract text: the PDF is damaged.",
}
ANALYSIS = (
    "A short report about quarterly results, hiring plans and the new office; "
    "the tone is positive and three follow-ups are asked for.",
    json.dumps(["quarterly results", "hiring", "office move"]),
    "positive",
    json.dumps(["Send the budget by Friday", "Book the movers", "Review the hiring plan"]),
    "offline",
    "offline-1",
)


def build(data_dir: Path, documents: int) -> dict[str, int]:
    """A data dir with `documents` documents and their events; events per user."""
    db.connect(data_dir / "docintel.db")  # the real migrations make the schema
    db.database.close()
    now = "2026-01-01T00:00:00.000Z"
    docs, evs, analyses = [], [], []
    per_user = dict.fromkeys(USERS, 0)
    for i in range(documents):
        doc_id = hashlib.md5(str(i).encode()).hexdigest()  # ids look like uuid4().hex
        owner = USERS[i % len(USERS)]
        status = MIX[(i // len(USERS)) % len(MIX)]
        error = DETAIL["failed"] if status == "failed" else None
        docs.append(
            (doc_id, owner, f"report-{i}.pdf", f"report-{i}.pdf", 12345, "application/pdf",
             "0" * 64, status, error, 1, now, now)
        )  # fmt: skip
        for step in PATHS[status]:
            evs.append((doc_id, owner, step, now, DETAIL[step]))
        per_user[owner] += len(PATHS[status])
        if status == "completed":
            analyses.append((doc_id, *ANALYSIS, now))
    with sqlite3.connect(data_dir / "docintel.db") as con:
        con.executemany(
            "INSERT INTO document (id, owner, filename, stored_name, size_bytes, content_type,"
            " sha256, status, error, attempts, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            docs,
        )
        con.executemany(
            "INSERT INTO status_event (document_id, owner, status, at, detail)"
            " VALUES (?, ?, ?, ?, ?)",
            evs,
        )
        con.executemany(
            "INSERT INTO analysis (document_id, summary, key_topics, sentiment, action_items,"
            " analyzer, model, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            analyses,
        )
    con.close()
    return per_user


# --- (a) the filtered list -------------------------------------------------------


async def time_list(data_dir: Path, statuses: list[str], rounds: int) -> tuple[float, int]:
    """Median ms of `DocumentService.list` (page of 50 + total), and the total."""
    service = DocumentService(Settings(data_dir=data_dir, analyzer="offline"))
    await service.db.open()
    try:
        times = []
        _, total = (await service.list("alice", statuses, 50, 0)).value  # warm the cache
        for _ in range(rounds):
            start = time.perf_counter()
            _, total = (await service.list("alice", statuses, 50, 0)).value
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times), total
    finally:
        await service.db.close()


# --- (b) the replay ----------------------------------------------------------------

REPLAY_SQL = """
SELECT e.id, e.document_id, e.owner, e.status, e.at, e.detail, d.filename,
       a.summary, a.key_topics, a.sentiment, a.action_items, a.analyzer, a.model
FROM status_event e
JOIN document d ON d.id = e.document_id
LEFT JOIN analysis a ON a.document_id = e.document_id
WHERE e.owner = ? AND e.id > 0
ORDER BY e.id LIMIT ?
"""


def read_with_sqlite3(db_path: Path, count: int) -> tuple[float, int]:
    start = time.perf_counter()
    con = sqlite3.connect(db_path)
    rows = con.execute(REPLAY_SQL, ("alice", count)).fetchall()
    con.close()
    return time.perf_counter() - start, len(rows)


EVENT_ID = re.compile(rb"^event: status\n(?:data: .*\n)+id: (\d+)$", re.MULTILINE)


def replay(server: ServerProcess, count: int) -> tuple[float, list[int]]:
    """Seconds from request to the count-th event, and the ids received.

    HTTP/1.0, so the body is the bare event stream (no chunked framing), read
    in large pieces and parsed with one regex: the client's own cost stays
    small beside the server's (both share this machine's two cores).
    """
    token = server.login("alice")
    ids: list[int] = []
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        request = f"GET /documents/stream?last_event_id=0 HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n"
        sock.sendall(request.encode())
        buffer = b""
        seen_head = False
        while len(ids) < count:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError(f"stream ended after {len(ids)} events")
            buffer += chunk
            if not seen_head:
                if b"\r\n\r\n" not in buffer:
                    continue
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                assert head.split()[1] == b"200", head
                seen_head = True
            end = buffer.rfind(b"\n\n")
            if end < 0:
                continue
            ids += [int(i) for i in EVENT_ID.findall(buffer, 0, end)]
            buffer = buffer[end + 2 :]
    return time.perf_counter() - start, ids


def park_queue(db_path: Path) -> None:
    """End the queue before the server starts, so its workers stay idle during the replay.

    The replay reads only the event log; the documents' statuses do not enter it.
    """
    with sqlite3.connect(db_path) as con:
        con.execute(
            "UPDATE document SET status = 'failed' WHERE status IN ('pending', 'processing', 'analyzing')"
        )
    con.close()


# --- (c) the plans -----------------------------------------------------------------


def plans(db_path: Path) -> list[tuple[str, str, list[str]]]:
    """(what, sql, plan lines) of every query the service runs, captured as it runs them."""
    db.connect(db_path)
    some_id = next(iter(db.execute("SELECT id FROM document WHERE owner = 'alice' LIMIT 1")))[0]
    top = events.last_id()
    calls = {
        "list (pending)": lambda: list_documents("alice", ["pending"], 50, 0),
        "list (completed, failed)": lambda: list_documents("alice", ["completed", "failed"], 50, 0),
        "list (all)": lambda: list_documents("alice", [], 50, 100),
        "detail": lambda: document_detail("alice", some_id),
        "status": lambda: _owned("alice", some_id),
        "id-prefix lookup": lambda: _owned("alice", some_id[:6]),
        "events_after (replay)": lambda: events.events_after("alice", 0),
        "events_after (replay, mid-log)": lambda: events.events_after("alice", top // 2),
        "events_after (replay, some documents)": lambda: events.events_after("alice", 0, [some_id]),
        "events_after (feed)": lambda: events.events_after(None, top - 100),
        "last_id": events.last_id,
        "history": lambda: events.history(some_id),
        "missing (a quiet stream's deletion check)": lambda: missing_documents("alice", [some_id]),
    }
    found: list[tuple[str, str, list[str]]] = []
    for what, call in calls.items():
        with db.recorded_queries() as recorded:
            call()
        found += [(what, sql, db.explain(sql, params)) for sql, params in recorded]
    with db.database.atomic() as transaction:  # a claim, undone
        with db.recorded_queries() as recorded:
            queue.claim_next()
        found += [("claim_next", sql, db.explain(sql, params)) for sql, params in recorded]
        transaction.rollback()
    db.database.close()
    return found


_COLUMNS = re.compile(r"SELECT (?!COUNT|1 )[^()]*? FROM")  # a column list, shortened
_RETURNING = re.compile(r" RETURNING .*")  # a claim's returned columns, likewise
_EVENT_JSON = re.compile(r"(SELECT e\.id, e\.owner, e\.document_id, ).*?( FROM status_event)")


def print_plans(found: list[tuple[str, str, list[str]]]) -> None:
    unindexed = 0
    for what, sql, plan in found:
        if not plan:
            continue  # an INSERT: nothing to plan
        shown = _RETURNING.sub(" RETURNING …", _COLUMNS.sub("SELECT … FROM", sql))
        shown = _EVENT_JSON.sub(r"\1<the event's JSON>\2", shown)
        print(f"   {what}: {shown}")
        for line in plan:
            flag = db.is_full_scan(line)
            unindexed += flag
            print(f"       {'!! ' if flag else ''}{line}")
    print(f"   queries: {len(found)}, scans without an index: {unindexed}")


def main(tiny: bool = False) -> None:
    documents = 2_000 if tiny else 100_000
    target_events = 2_000 if tiny else 100_000
    root = Path(tempfile.mkdtemp(prefix="docintel-bench-queries-"))
    big, small = root / "big" / "data", root / "small" / "data"
    big.mkdir(parents=True)
    small.mkdir(parents=True)
    start = time.perf_counter()
    per_user = build(big, documents)
    build(small, 1_000)
    print(
        f"   built {documents:,} documents, {sum(per_user.values()):,} events "
        f"({per_user['alice']:,} alice's) in {time.perf_counter() - start:.1f} s"
    )

    rounds = 50 if tiny else 200
    for statuses in (["pending"], ["completed", "failed"], []):
        base, base_total = asyncio.run(time_list(small, statuses, rounds))
        figure, total = asyncio.run(time_list(big, statuses, rounds))
        label = ",".join(statuses) or "(all)"
        print(
            f"   list status={label:<16} {documents:>7,} docs: {figure:6.2f} ms (total {total:,})"
            f" | 1,000 docs: {base:6.2f} ms (total {base_total:,}) | ratio {figure / base:4.1f}x"
        )

    print("   EXPLAIN QUERY PLAN of every query the service runs:")
    print_plans(plans(big / "docintel.db"))

    # The machine is shared and noisy: best of a few runs of each, figure and baseline.
    count = min(target_events, per_user["alice"])
    base_runs = [read_with_sqlite3(big / "docintel.db", count) for _ in range(3)]
    base_s, rows = min(base_runs)
    park_queue(big / "docintel.db")
    users = ",".join(f"{u}:{u}-pw" for u in USERS)
    server = ServerProcess(big, {"DOCINTEL_ANALYZER": "offline", "DOCINTEL_USERS": users}).start()
    try:
        runs = [replay(server, count) for _ in range(2)]
    finally:
        server.stop()
    figure_s, ids = min(runs)
    in_order = all(r[1] == sorted(set(r[1])) and len(r[1]) == count for r in runs)
    print(
        f"   replay of {count:,} events to one SSE client: {figure_s:.2f} s "
        f"({figure_s / count * 1e6:.1f} µs/event{'' if in_order else ', NOT IN ORDER'};"
        f" runs {', '.join(f'{r[0]:.2f}' for r in runs)})"
        f" | sqlite3 reading the same {rows:,} rows: {base_s:.2f} s"
        f" (runs {', '.join(f'{r[0]:.2f}' for r in base_runs)}) | ratio {figure_s / base_s:4.1f}x"
    )
