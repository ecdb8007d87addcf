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

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from docintel.core.db import database, execute, execute_many, seconds_until, utc_in, utcnow
from docintel.core.models import (
    FAILED,
    IN_FLIGHT,
    PENDING,
    PROCESSING,
    Document,
)

MAX_ATTEMPTS = 3
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
    "UPDATE document SET status = ?, attempts = attempts + 1, updated_at = ?, error = NULL"
    " WHERE status = ? AND seq IN"
    " (SELECT seq FROM document WHERE status = ? AND (not_before IS NULL OR not_before <= ?)"
    " ORDER BY seq LIMIT ?)"
    f" RETURNING {_COLUMNS}"
)
_IN_FLIGHT_BY_ID = (
    "SELECT owner, status, requeues FROM document WHERE id = ? AND status IN ({in_flight})"
).format(in_flight=", ".join(f"'{status}'" for status in sorted(IN_FLIGHT)))
_REQUEUE = (
    "UPDATE document SET status = ?, attempts = MAX(0, attempts - 1), requeues = requeues + 1,"
    " not_before = ?, error = NULL, updated_at = ? WHERE id = ?"
)
_MOVE = (
    "UPDATE document SET status = ?, error = ?, updated_at = ?"
    " WHERE id = ? AND status IN ({expected}) RETURNING owner"
)
_SAVE_ANALYSIS = (
    "INSERT OR REPLACE INTO analysis (document_id, summary, key_topics, sentiment, action_items,"
    " analyzer, model, created_at) VALUES (?, ?, json(?), ?, json(?), ?, ?, ?)"
)


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
) -> bool:
    """Move a document from one of `expected` to `status`, with its event.

    Compare-and-set: returns False (and writes nothing) when the document is
    gone or was moved by someone else, e.g. deleted while it was processed.
    """
    expected = list(expected)
    with database.atomic():
        now = utcnow()
        sql = _MOVE.format(expected=", ".join("?" * len(expected)))
        moved = execute(sql, (status, error, now, document_id, *expected)).fetchall()
        if len(moved) != 1:
            return False
        [(owner,)] = moved
        if analysis is not None:
            execute(
                _SAVE_ANALYSIS,
                (
                    document_id,
                    analysis["summary"],
                    json.dumps(analysis["key_topics"]),
                    analysis["sentiment"],
                    json.dumps(analysis["action_items"]),
                    analysis["analyzer"],
                    analysis["model"],
                    now,
                ),
            )
        execute(_INSERT_EVENT, (document_id, owner, status, now, detail or error))
        return True


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
    with database.atomic():
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


def claim(limit: int = 1) -> list[Document]:
    """Claim up to `limit` of the oldest pending documents, oldest first ([] if none)."""
    with database.atomic("IMMEDIATE"):
        now = utcnow()
        rows = execute(_CLAIM, (PROCESSING, now, PENDING, PENDING, now, limit)).fetchall()
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


def claim_next() -> Document | None:
    """Claim the oldest pending document, or None when the queue is empty."""
    claimed = claim(1)
    return claimed[0] if claimed else None


def transition_then_claim(
    document_id: str, expected: Sequence[str], status: str, **kwargs: Any
) -> tuple[bool, Document | None]:
    """`transition`, then `claim_next`: two transactions in one call on the database thread.

    A worker finishing a document takes the next one without a round trip of its own.
    """
    return transition(document_id, expected, status, **kwargs), claim_next()


def release(document_ids: list[str], why: str = "the server was stopped") -> int:
    """Put documents a clean shutdown cut short back in the queue, attempt not counted."""
    released = 0
    with database.atomic():
        for document in Document.select().where(
            Document.id.in_(document_ids) & Document.status.in_(list(IN_FLIGHT))
        ):
            previous = document.status
            document.status = PENDING
            document.attempts = max(0, document.attempts - 1)
            document.updated_at = utcnow()
            document.save()
            record(document, PENDING, f"requeued: {why} while it was {previous}")
            released += 1
    return released


def requeue(causes: Mapping[str, str]) -> list[str]:
    """Put in-flight documents back in the queue for a passing cause; returns those moved.

    `causes` maps a document id to why ("the disk was full"). The attempt is
    not counted: a full disk or a busy database says nothing about the
    document, and a shortage that lasts an hour must not fail the documents
    that met it. Instead the document waits before it may be claimed again,
    longer each time (`REQUEUE_BASE_SECONDS`, doubling, at most
    `REQUEUE_MAX_SECONDS`), so a shortage that lasts costs a try a minute per
    document, not a hot loop. A document that is gone or no longer in flight
    is left alone.
    """
    requeued = []
    with database.atomic():
        for document_id, cause in causes.items():
            rows = execute(_IN_FLIGHT_BY_ID, (document_id,)).fetchall()
            if not rows:
                continue
            [(owner, previous, requeues)] = rows
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


def requeue_interrupted() -> list[Document]:
    """At start-up: put documents a previous process left in flight back in the queue.

    A document that was interrupted MAX_ATTEMPTS times fails instead of looping:
    it is most likely what brought the process down.
    """
    touched = []
    with database.atomic():
        for document in (
            Document.select().where(Document.status.in_(list(IN_FLIGHT))).order_by(Document.seq)
        ):
            document.updated_at = utcnow()
            if document.attempts >= MAX_ATTEMPTS:
                document.status = FAILED
                document.error = f"Processing was interrupted {document.attempts} times; giving up on this document."
                detail = document.error
            else:
                previous = document.status
                document.status = PENDING
                detail = f"requeued: the server stopped while it was {previous}"
            document.save()
            record(document, document.status, detail)
            touched.append(document)
    return touched
