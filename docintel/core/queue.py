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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from docintel.core.db import database, utcnow
from docintel.core.models import (
    FAILED,
    IN_FLIGHT,
    PENDING,
    PROCESSING,
    Analysis,
    Document,
    StatusEvent,
)

MAX_ATTEMPTS = 3


def record(document: Document, status: str, detail: str | None = None) -> StatusEvent:
    """Append an event for a status the caller has just written (same transaction)."""
    return StatusEvent.create(
        document_id=document.id,
        owner=document.owner,
        status=status,
        at=document.updated_at,
        detail=detail,
    )


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
    with database.atomic():
        now = utcnow()
        changed = (
            Document.update(status=status, error=error, updated_at=now)
            .where((Document.id == document_id) & (Document.status.in_(list(expected))))
            .execute()
        )
        if changed != 1:
            return False
        document = Document.get(Document.id == document_id)
        if analysis is not None:
            Analysis.insert(
                document_id=document_id, created_at=now, **analysis
            ).on_conflict_replace().execute()
        record(document, status, detail or error)
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
        document = Document.create(
            **new.__dict__, status=PENDING, created_at=now, updated_at=now, attempts=0
        )
        record(document, PENDING, "queued")
    return document


def claim_next() -> Document | None:
    """Claim the oldest pending document, or None when the queue is empty."""
    with database.atomic("IMMEDIATE"):
        oldest = (
            Document.select(Document.seq)
            .where(Document.status == PENDING)
            .order_by(Document.seq)
            .limit(1)
        )
        now = utcnow()
        claimed = list(
            Document.update(
                status=PROCESSING, attempts=Document.attempts + 1, updated_at=now, error=None
            )
            .where((Document.seq == oldest) & (Document.status == PENDING))
            .returning(Document)
            .execute()
        )
        if len(claimed) != 1:
            return None
        document: Document = claimed[0]
        record(document, PROCESSING, f"extracting text (attempt {document.attempts})")
        return document


def release(document_ids: list[str]) -> int:
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
            record(document, PENDING, f"requeued: the server was stopped while it was {previous}")
            released += 1
    return released


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
