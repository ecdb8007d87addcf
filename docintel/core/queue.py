"""The durable queue is the document table: enqueue, atomic claim, requeue.

A document waits as `pending`; a worker claims the oldest one by moving it to
`processing` in one write transaction and checking that it won (nothing else
may claim it in between). Order is by the AUTOINCREMENT `seq`, so documents
start strictly in upload order.
"""

from __future__ import annotations

from dataclasses import dataclass

from docintel.core import events
from docintel.core.db import database, utcnow
from docintel.core.models import FAILED, IN_FLIGHT, PENDING, PROCESSING, Document

MAX_ATTEMPTS = 3


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
        events.record(document, PENDING, "queued")
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
        events.record(document, PROCESSING, f"extracting text (attempt {document.attempts})")
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
            events.record(
                document, PENDING, f"requeued: the server was stopped while it was {previous}"
            )
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
            events.record(document, document.status, detail)
            touched.append(document)
    return touched
