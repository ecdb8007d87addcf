"""The event log: every status transition is one StatusEvent row.

The log is the single source of truth: a document's status is the status of
its latest event, `history` is its events, and SSE streams tail it by id.
Writers call these functions on the database thread, then `EventBus.notify()`
on the loop so that subscribers (streams, the worker pool) look again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import peewee

from docintel.core.db import database, utcnow
from docintel.core.models import Analysis, Document, StatusEvent


@dataclass(frozen=True)
class Event:
    id: int
    document_id: str
    filename: str
    status: str
    at: str
    detail: str | None
    error: str | None
    analysis: dict[str, Any] | None

    def as_payload(self) -> dict[str, Any]:
        """The SSE `data:` object of the spec."""
        payload: dict[str, Any] = {
            "document_id": self.document_id,
            "status": self.status,
            "timestamp": self.at,
            "filename": self.filename,
        }
        if self.detail:
            payload["detail"] = self.detail
        if self.error:
            payload["error"] = self.error
        if self.analysis is not None:
            payload["analysis"] = self.analysis
        return payload


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


def last_id() -> int:
    return int(StatusEvent.select(peewee.fn.COALESCE(peewee.fn.MAX(StatusEvent.id), 0)).scalar())


ANALYSIS_FIELDS = ("summary", "key_topics", "sentiment", "action_items", "analyzer", "model")


def events_after(
    owner: str, after: int, document_ids: Sequence[str] = (), limit: int = 500
) -> list[Event]:
    """The owner's events with id > after, oldest first (the stream's replay and tail)."""
    query = (
        StatusEvent.select(
            StatusEvent,
            Document.filename,
            Analysis.summary,
            Analysis.key_topics,
            Analysis.sentiment,
            Analysis.action_items,
            Analysis.analyzer,
            Analysis.model,
        )
        .join(Document, on=(StatusEvent.document_id == Document.id))
        .switch(StatusEvent)
        .join(
            Analysis, peewee.JOIN.LEFT_OUTER, on=(StatusEvent.document_id == Analysis.document_id)
        )
        .where((StatusEvent.owner == owner) & (StatusEvent.id > after))
        .order_by(StatusEvent.id)
        .limit(limit)
    )
    if document_ids:
        query = query.where(StatusEvent.document_id.in_(list(document_ids)))
    events = []
    rows = cast(Iterable[dict[str, Any]], query.dicts())  # peewee's stubs say models
    for row in rows:
        # The joined columns fill in what the spec's event carries: the file
        # name always, the analysis on `completed`; failed events carry their reason.
        analysis = None
        if row["status"] == "completed" and row["summary"] is not None:
            analysis = {key: row[key] for key in ANALYSIS_FIELDS}
        failed = row["status"] == "failed"
        events.append(
            Event(
                id=row["id"],
                document_id=row["document_id"],
                filename=row["filename"],
                status=row["status"],
                at=row["at"],
                detail=None if failed else row["detail"],
                error=row["detail"] if failed else None,
                analysis=analysis,
            )
        )
    return events


def history(document_id: str) -> list[StatusEvent]:
    return list(
        StatusEvent.select().where(StatusEvent.document_id == document_id).order_by(StatusEvent.id)
    )


class EventBus:
    """Wakes subscribers after a commit; the log itself holds the events.

    Subscribers get a flag, not a copy of the event: a slow subscriber cannot
    make anyone else wait or make memory grow, it just reads more rows later.
    """

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Event] = set()

    def notify(self) -> None:
        for flag in self._subscribers:
            flag.set()

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Event]:
        flag = asyncio.Event()
        self._subscribers.add(flag)
        try:
            yield flag
        finally:
            self._subscribers.discard(flag)
