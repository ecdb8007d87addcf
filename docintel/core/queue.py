"""Every status change of a document, and the durable queue they make up.

This is the one module that moves a document between statuses (enqueue,
claim, move on, complete with the analysis, fail, release, requeue) and so the
one writer of the event log: each change and its `StatusEvent` row are one
transaction. "How can a document become `failed`?" is answered here.

The document table is the queue: a document waits as `pending`; a worker
claims the oldest one by moving it to `processing` in one write transaction
and checking that it won (nothing else may claim it in between). Order is by
the AUTOINCREMENT `seq`, so documents start strictly in upload order.

These functions run on the database thread; callers go through
`Database.write`, which wakes the event feed and the workers after the commit.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from docintel.core.db import (
    LOG_LOCK,
    POSTGRES,
    database,
    dialect,
    execute,
    execute_many,
    now_epoch,
    seconds_until,
    utc_in,
    utcnow,
)
from docintel.core.models import (
    COMPLETED,
    FAILED,
    IN_FLIGHT,
    PENDING,
    PROCESSING,
    Document,
)

MAX_ATTEMPTS = 3
# How long a claim holds a document without its worker renewing it (seconds).
LEASE_SECONDS = 30.0
# A document requeued for a passing cause waits 2 s, then 4, 8… up to a minute
# before it may be claimed again (see `requeue`).
REQUEUE_BASE_SECONDS = 2.0
REQUEUE_MAX_SECONDS = 60.0

# The hot path (enqueue, claim, transition: four writes per document) is plain
# SQL. Building the same statements with peewee cost 5-10 times as much CPU on
# the database thread (0.5-1 ms a write against ~0.1 ms), and that thread holds
# the GIL the event loop needs.
_COLUMNS = (
    "seq, id, owner, filename, stored_name, size_bytes, content_type, sha256, status, error,"
    " attempts, created_at, updated_at"
)
_FIELDS = tuple(name.strip() for name in _COLUMNS.split(","))
_INSERT_EVENT = (
    "INSERT INTO status_event (document_id, owner, status, at, detail) VALUES (?, ?, ?, ?, ?)"
)
_INSERT_DOCUMENT = (
    "INSERT INTO document (id, owner, filename, stored_name, size_bytes, content_type, sha256,"
    " status, error, attempts, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, ?, ?) RETURNING seq"
)
# The oldest pending documents, by the AUTOINCREMENT seq (strict FIFO), moved to
# `processing` in one statement; `status = 'pending'` again in the outer WHERE
# is the "check that you won" of the claim. A document requeued for a passing
# cause is skipped until its `not_before` (m005).
_CLAIM = (
    "UPDATE document SET status = ?, attempts = attempts + 1, updated_at = ?, error = NULL,"
    " lease_owner = ?, lease_until = {now} + ?"
    " WHERE status = ? AND seq IN"
    " (SELECT seq FROM document WHERE status = ? AND (not_before IS NULL OR not_before <= ?)"
    " ORDER BY seq LIMIT ?)"
    f" RETURNING {_COLUMNS}"
)
# PostgreSQL: the same claim across processes. SKIP LOCKED passes over rows
# another transaction holds (a document being deleted) instead of waiting;
# MATERIALIZED makes the LIMIT hold (as `seq IN (subquery)` the planner may
# re-run the subquery per row and claim more than asked).
_CLAIM_POSTGRES = (
    "WITH next AS MATERIALIZED (SELECT seq FROM document WHERE status = ?"
    " AND (not_before IS NULL OR not_before <= ?) ORDER BY seq LIMIT ? FOR UPDATE SKIP LOCKED)"
    " UPDATE document SET status = ?, attempts = attempts + 1, updated_at = ?, error = NULL,"
    " lease_owner = ?, lease_until = {now} + ?"
    " FROM next WHERE document.seq = next.seq AND document.status = ?"
    " RETURNING " + ", ".join(f"document.{name.strip()}" for name in _COLUMNS.split(","))
)
_IN_FLIGHT_LIST = ", ".join(f"'{status}'" for status in sorted(IN_FLIGHT))
_IN_FLIGHT_BY_ID = (
    f"SELECT owner, status, requeues FROM document WHERE id = ? AND status IN ({_IN_FLIGHT_LIST})"
)
_RELEASE = (
    "UPDATE document SET status = ?, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,"
    " updated_at = ?, error = NULL, lease_owner = NULL, lease_until = NULL WHERE id = ?"
)
_REQUEUE = (
    "UPDATE document SET status = ?, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,"
    " requeues = requeues + 1, lease_owner = NULL, lease_until = NULL,"
    " not_before = ?, error = NULL, updated_at = ? WHERE id = ?"
)
# A move to a terminal status ends the lease. `fence`: only if the caller's
# worker still holds the lease (not if it expired and another worker took over).
_MOVE = (
    "UPDATE document SET status = ?, error = ?, updated_at = ?{end_lease}"
    " WHERE id = ? AND status IN ({expected}){fence} RETURNING owner"
)
_END_LEASE = ", lease_owner = NULL, lease_until = NULL"
_RENEW = (
    "UPDATE document SET lease_until = {now} + ? WHERE lease_owner = ? AND status IN ({in_flight})"
    " RETURNING id"
)
_EXPIRED = (
    "SELECT seq, id, owner, status, attempts FROM document WHERE status IN ({in_flight})"
    " AND (lease_until IS NULL OR lease_until < {now}) ORDER BY seq"
)
_RESCUE = (
    "UPDATE document SET status = ?, error = ?, updated_at = ?, lease_owner = NULL,"
    " lease_until = NULL WHERE id = ?"
)
_SAVE_ANALYSIS = (
    "INSERT INTO analysis (document_id, summary, key_topics, sentiment, action_items,"
    " analyzer, model, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (document_id) DO UPDATE SET summary = excluded.summary,"
    " key_topics = excluded.key_topics, sentiment = excluded.sentiment,"
    " action_items = excluded.action_items, analyzer = excluded.analyzer,"
    " model = excluded.model, created_at = excluded.created_at"
)


@contextlib.contextmanager
def _log_write(immediate: bool = False) -> Iterator[None]:
    """A transaction that appends to the event log.

    On PostgreSQL its first statement takes the log's advisory lock, held to
    the commit: appends from every process then commit one after another, in
    id order, so a reader tailing `id > last` never sees a later id before an
    earlier one commits and skips it (identity values are handed out at insert
    but become visible at commit). First, because a transaction that locked a
    document row (or its counter) and then waited for the log lock could
    deadlock with one holding the lock that waits for that row. On SQLite the
    one database thread already orders commits; `immediate` takes the write
    lock at BEGIN, so a claim never upgrades a read lock midway.
    """
    if dialect() == POSTGRES:
        with database.atomic():
            execute("SELECT pg_advisory_xact_lock(?)", (LOG_LOCK,))
            yield
    else:
        with database.atomic("IMMEDIATE" if immediate else None):
            yield


def record(document: Document, status: str, detail: str | None = None) -> None:
    """Append an event for a status the caller has just written (same transaction)."""
    execute(_INSERT_EVENT, (document.id, document.owner, status, document.updated_at, detail))


def transition(
    document_id: str,
    expected: Sequence[str],
    status: str,
    *,
    detail: str | None = None,
    error: str | None = None,
    analysis: dict[str, Any] | None = None,
    lease_owner: str | None = None,
) -> bool:
    """Move a document from one of `expected` to `status`, with its event.

    Compare-and-set: returns False (and writes nothing) when the document is
    gone or was moved by someone else, e.g. deleted while it was processed;
    with `lease_owner`, also when that worker's lease was lost to a rescue.
    """
    expected = list(expected)
    with _log_write():
        now = utcnow()
        sql = _MOVE.format(
            expected=", ".join("?" * len(expected)),
            end_lease=_END_LEASE if status in (COMPLETED, FAILED) else "",
            fence=" AND lease_owner = ?" if lease_owner else "",
        )
        fence = (lease_owner,) if lease_owner else ()
        moved = execute(sql, (status, error, now, document_id, *expected, *fence)).fetchall()
        if len(moved) != 1:
            return False
        [(owner,)] = moved
        if analysis is not None:
            execute(
                _SAVE_ANALYSIS,
                (
                    document_id,
                    analysis["summary"],
                    _json(analysis["key_topics"]),
                    analysis["sentiment"],
                    _json(analysis["action_items"]),
                    analysis["analyzer"],
                    analysis["model"],
                    now,
                ),
            )
        execute(_INSERT_EVENT, (document_id, owner, status, now, detail or error))
        return True


def _json(value: Any) -> str:
    """A JSON column's text as streams send it (events.py copies it into the event)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class NewDocument:
    id: str
    owner: str
    filename: str
    stored_name: str
    size_bytes: int
    content_type: str
    sha256: str


def enqueue(new: NewDocument) -> Document:
    """Insert the document as `pending` with its first event."""
    with _log_write():
        now = utcnow()
        [(seq,)] = execute(
            _INSERT_DOCUMENT,
            (
                new.id,
                new.owner,
                new.filename,
                new.stored_name,
                new.size_bytes,
                new.content_type,
                new.sha256,
                PENDING,
                now,
                now,
            ),
        ).fetchall()
        execute(_INSERT_EVENT, (new.id, new.owner, PENDING, now, "queued"))
    return Document(
        seq=seq,
        **new.__dict__,
        status=PENDING,
        error=None,
        attempts=0,
        created_at=now,
        updated_at=now,
    )


def claim(
    limit: int = 1, lease_owner: str | None = None, lease: float = LEASE_SECONDS
) -> list[Document]:
    """Claim up to `limit` of the oldest pending documents, oldest first ([] if none).

    Each claimed document is leased to `lease_owner` for `lease` seconds.
    """
    with _log_write(immediate=True):
        now = utcnow()
        if dialect() == POSTGRES:
            sql = _CLAIM_POSTGRES.format(now=now_epoch())
            params: tuple[Any, ...] = (PENDING, now, limit, PROCESSING, now, lease_owner, lease)
            params += (PENDING,)
        else:
            sql = _CLAIM.format(now=now_epoch())
            params = (PROCESSING, now, lease_owner, lease, PENDING, PENDING, now, limit)
        rows = execute(sql, params).fetchall()
        # RETURNING gives no order; the events must follow the queue's.
        rows.sort(key=lambda row: row[0])
        claimed = [Document(**dict(zip(_FIELDS, row, strict=True))) for row in rows]
        execute_many(
            _INSERT_EVENT,
            [
                (d.id, d.owner, PROCESSING, now, f"extracting text (attempt {d.attempts})")
                for d in claimed
            ],
        )
    return claimed


def claim_next(lease_owner: str | None = None, lease: float = LEASE_SECONDS) -> Document | None:
    """Claim the oldest pending document, or None when the queue is empty."""
    claimed = claim(1, lease_owner, lease)
    return claimed[0] if claimed else None


def transition_then_claim(
    document_id: str,
    expected: Sequence[str],
    status: str,
    *,
    lease_owner: str | None = None,
    lease: float = LEASE_SECONDS,
    **kwargs: Any,
) -> tuple[bool, Document | None]:
    """`transition`, then `claim_next`: two transactions in one call on the database thread.

    A worker finishing a document takes the next one without a round trip of its own.
    """
    moved = transition(document_id, expected, status, lease_owner=lease_owner, **kwargs)
    return moved, claim_next(lease_owner, lease)


def release(
    document_ids: list[str], why: str = "the server was stopped", lease_owner: str | None = None
) -> int:
    """Put documents a clean shutdown cut short back in the queue, attempt not counted.

    With `lease_owner`, only those that worker still holds: one whose lease it
    lost is another worker's now.
    """
    released = 0
    with _log_write():
        for document_id in document_ids:
            found = _in_flight(document_id, lease_owner)
            if found is None:
                continue
            owner, previous, _ = found
            now = utcnow()
            execute(_RELEASE, (PENDING, now, document_id))
            detail = f"requeued: {why} while it was {previous}"
            execute(_INSERT_EVENT, (document_id, owner, PENDING, now, detail))
            released += 1
    return released


def _in_flight(document_id: str, lease_owner: str | None) -> tuple[str, str, int] | None:
    """(owner, status, requeues) of an in-flight document (held by `lease_owner`, if given).

    On PostgreSQL the row stays locked to the commit, so a concurrent delete
    waits rather than leaving an event without its document.
    """
    sql = _IN_FLIGHT_BY_ID + (" AND lease_owner = ?" if lease_owner else "")
    if dialect() == POSTGRES:
        sql += " FOR UPDATE"
    rows = execute(sql, (document_id, *([lease_owner] if lease_owner else []))).fetchall()
    if not rows:
        return None
    [(owner, status, requeues)] = rows
    return owner, status, requeues


def requeue(causes: Mapping[str, str], lease_owner: str | None = None) -> list[str]:
    """Put in-flight documents back in the queue for a passing cause; returns those moved.

    `causes` maps a document id to why ("the disk was full"). The attempt is
    not counted: a full disk or a busy database says nothing about the
    document, and a shortage that lasts an hour must not fail the documents
    that met it (with `lease_owner`, only those that worker still holds). Instead the document waits before it may be claimed again,
    longer each time (`REQUEUE_BASE_SECONDS`, doubling, at most
    `REQUEUE_MAX_SECONDS`), so a shortage that lasts costs a try a minute per
    document, not a hot loop. A document that is gone or no longer in flight
    is left alone.
    """
    requeued = []
    with _log_write():
        for document_id, cause in causes.items():
            found = _in_flight(document_id, lease_owner)
            if found is None:
                continue
            owner, previous, requeues = found
            delay = min(REQUEUE_MAX_SECONDS, REQUEUE_BASE_SECONDS * 2**requeues)
            now = utcnow()
            execute(_REQUEUE, (PENDING, utc_in(delay), now, document_id))
            detail = f"requeued: {cause} while it was {previous}; next try in {delay:g} s"
            execute(_INSERT_EVENT, (document_id, owner, PENDING, now, detail))
            requeued.append(document_id)
    return requeued


def seconds_until_claimable() -> float | None:
    """How soon a pending document that is waiting out its `not_before` may be claimed.

    None when no document waits: the dispatcher then sleeps until a commit.
    """
    [(earliest,)] = execute(
        "SELECT MIN(not_before) FROM document WHERE status = ? AND not_before > ?",
        (PENDING, utcnow()),
    ).fetchall()
    return None if earliest is None else max(0.0, seconds_until(earliest))


def renew(lease_owner: str, lease: float = LEASE_SECONDS) -> list[str]:
    """Extend every lease `lease_owner` holds; returns the ids it still holds.

    One statement per heartbeat, whatever the number of documents; it writes
    no event, so it takes no log lock and wakes nobody.
    """
    with database.atomic():
        sql = _RENEW.format(now=now_epoch(), in_flight=_IN_FLIGHT_LIST)
        return [row[0] for row in execute(sql, (lease, lease_owner)).fetchall()]


def rescue(everyone: bool = False) -> list[Document]:
    """Put in-flight documents whose lease expired back in the queue (or fail them).

    Any worker runs this now and then: a worker that died (kill -9, a lost
    node) stops renewing, and its documents come back after the lease time,
    each with a history entry. The attempt its claim counted stays counted: a
    document in flight MAX_ATTEMPTS times when its worker dies is the likely
    cause, and fails instead of looping. `everyone`: every in-flight document,
    whatever its lease — at the start of the one process of an embedded
    (SQLite) database, which proves that no other process holds a lease.
    """
    touched = []
    with _log_write():
        sql = _EXPIRED.format(now="1e300" if everyone else now_epoch(), in_flight=_IN_FLIGHT_LIST)
        if dialect() == POSTGRES:
            sql += " FOR UPDATE SKIP LOCKED"  # rows another rescuer is handling
        for _seq, document_id, owner, previous, attempts in execute(sql).fetchall():
            now = utcnow()
            if attempts >= MAX_ATTEMPTS:
                status = FAILED
                error: str | None = (
                    f"Processing was interrupted {attempts} times; giving up on this document."
                )
                detail = error
            else:
                status, error = PENDING, None
                why = "the server stopped" if everyone else "its worker stopped renewing its lease"
                detail = f"requeued: {why} while it was {previous}"
            execute(_RESCUE, (status, error, now, document_id))
            execute(_INSERT_EVENT, (document_id, owner, status, now, detail))
            touched.append(Document.get(Document.id == document_id))
    return touched


def requeue_interrupted() -> list[Document]:
    """At the start of the embedded database's one process: `rescue` every in-flight document."""
    return rescue(everyone=True)
