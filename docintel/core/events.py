"""The event log, read: replay by id, and the live feed every stream tails.

The log (`status_event`, written only by queue.py) is the single source of
truth: a document's status is the status of its latest event, `history` is its
events, and streams tail it by id.

`EventFeed` is the one reader of new events per process. After each commit
(`Database.write` calls `notify()`) it reads the new batch of the log once and
hands each subscriber only its own user's events, so the cost of a commit
grows with the events written, not with the streams open. A subscriber that
falls behind (its buffer fills) stops being fed and catches up from the log by
itself, so it slows nobody; replay and the live tail meet by event id, with
nothing lost or repeated.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import peewee

from docintel.core.db import Database, execute
from docintel.core.models import COMPLETED, FAILED, Analysis, Document, StatusEvent

ANALYSIS_FIELDS = ("summary", "key_topics", "sentiment", "action_items", "analyzer", "model")
ANALYSIS_COLUMNS = [getattr(Analysis, name) for name in ANALYSIS_FIELDS]
log = logging.getLogger(__name__)
BATCH = 500  # events read per query, for the feed and for a replay


class Event(NamedTuple):
    """One event of the log, as streams send it.

    A NamedTuple, not a frozen dataclass: a replay builds one per event, and a
    frozen dataclass's __init__ (a setattr per field) cost four times as much.
    """

    id: int
    owner: str
    document_id: str
    filename: str
    status: str
    at: str
    detail: str | None
    error: str | None
    analysis: dict[str, Any] | None


def last_id() -> int:
    return int(StatusEvent.select(peewee.fn.COALESCE(peewee.fn.MAX(StatusEvent.id), 0)).scalar())


def events_after(
    owner: str | None, after: int, document_ids: Sequence[str] = (), limit: int = BATCH
) -> list[Event]:
    """Events with id > after, oldest first: one owner's (a replay), or everyone's (the feed).

    Peewee builds the SQL; the rows are read from SQLite's cursor straight
    into Events: a replay of 100k events builds 100k of them, and peewee's
    per-row model, dict or even tuple building (a converter call per column)
    was most of the database thread's time. The analysis is joined only to
    `completed` events, the only ones that carry it, so the other events skip
    that lookup; its two JSON columns are decoded here, as JSONField would.
    """
    completed = (StatusEvent.status == COMPLETED) & (
        StatusEvent.document_id == Analysis.document_id
    )
    query = (
        StatusEvent.select(
            StatusEvent.id,
            StatusEvent.owner,
            StatusEvent.document_id,
            Document.filename,
            StatusEvent.status,
            StatusEvent.at,
            StatusEvent.detail,
            *ANALYSIS_COLUMNS,
        )
        .join(Document, on=(StatusEvent.document_id == Document.id))
        .switch(StatusEvent)
        .join(Analysis, peewee.JOIN.LEFT_OUTER, on=completed)
        .where(StatusEvent.id > after)
        .order_by(StatusEvent.id)
        .limit(limit)
    )
    if owner is not None:
        query = query.where(StatusEvent.owner == owner)
    if document_ids:
        query = query.where(StatusEvent.document_id.in_(list(document_ids)))
    sql, params = query.sql()
    rows = cast(Iterable[tuple[Any, ...]], execute(sql, tuple(params)))  # the driver's cursor
    found = []
    # The joined columns fill in what the spec's event carries: the file name
    # always, the analysis on `completed`; failed events carry their reason.
    for row in rows:
        (id, owner, document_id, filename, status, at, detail) = row[:7]
        result = None
        if row[7] is not None:
            summary, key_topics, sentiment, action_items, analyzer, model = row[7:]
            result = {
                "summary": summary,
                "key_topics": _decoded(key_topics),
                "sentiment": sentiment,
                "action_items": _decoded(action_items),
                "analyzer": analyzer,
                "model": model,
            }
        if status == FAILED:
            found.append(Event(id, owner, document_id, filename, status, at, None, detail, result))
        else:
            found.append(Event(id, owner, document_id, filename, status, at, detail, None, result))
    return found


def _decoded(value: Any) -> Any:
    """A JSON column: text on SQLite, already decoded (JSONB) on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


def history(document_id: str) -> list[StatusEvent]:
    return list(
        StatusEvent.select().where(StatusEvent.document_id == document_id).order_by(StatusEvent.id)
    )


@dataclass(eq=False)
class _Subscriber:
    owner: str
    document_ids: frozenset[str]
    capacity: int
    buffer: collections.deque[Event] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    behind: bool = False  # the buffer overflowed: catch up from the log

    def offer(self, event: Event) -> None:
        if self.behind or (self.document_ids and event.document_id not in self.document_ids):
            return
        if len(self.buffer) >= self.capacity:
            self.behind = True
            self.buffer.clear()
        else:
            self.buffer.append(event)
        self.wake.set()


class EventFeed:
    """One reader of the log per process, fanning each new event out to its user's streams."""

    def __init__(self, db: Database, buffer: int = 1000) -> None:
        self.db = db
        self.buffer = buffer
        self._cursor = 0  # the last event id the reader has handed out
        self._subscribers: dict[str, set[_Subscriber]] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def position(self) -> int:
        """The last event id handed out: where a stream that starts now begins."""
        return self._cursor

    @property
    def open_streams(self) -> int:
        return sum(len(subs) for subs in self._subscribers.values())

    async def start(self) -> None:
        self._cursor = await self.db.run(last_id)
        self._reader = asyncio.create_task(self._read(), name="docintel-event-feed")

    def notify(self) -> None:
        """Something was committed: the reader looks at the log again."""
        self._wake.set()

    def end_streams(self) -> None:
        """Ends every open stream now (before the HTTP server waits on them)."""
        self._stopping.set()
        for subs in self._subscribers.values():
            for sub in subs:
                sub.wake.set()

    async def stop(self) -> None:
        self.end_streams()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()  # before reading: a commit after the read sets it again
            try:
                await self._read_new()
            except Exception as exc:
                # The database may come back (a PostgreSQL restart): the streams
                # stay open and the next try reads from the same cursor.
                log.warning("could not read new events (%s); trying again in 1 s", exc)
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _read_new(self) -> None:
        """Hand out every event after the cursor, batch by batch."""
        while True:
            batch = await self.db.run(events_after, None, self._cursor)
            # Cursor and hand-out in one step (no await): a subscriber that
            # compares its position with the cursor sees a consistent state.
            for event in batch:
                for sub in self._subscribers.get(event.owner, ()):
                    sub.offer(event)
            if batch:
                self._cursor = batch[-1].id
            if len(batch) < BATCH:
                return

    async def follow(
        self,
        owner: str,
        after: int | None,
        document_ids: Sequence[str] = (),
        until: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        """The owner's events with id > after, then live ones, until the feed stops
        (or, with `until`, that `time.monotonic()` is reached).

        `after=None` starts at the end of the log.
        """
        sub = _Subscriber(owner, frozenset(document_ids), self.buffer)
        self._subscribers.setdefault(owner, set()).add(sub)
        try:
            position = self._cursor if after is None else after
            # Replay what the reader had handed out before we subscribed; it
            # also serves a subscriber that fell behind (the same catch-up).
            sub.behind = position < self._cursor
            while not self._stopping.is_set():
                if until is not None and time.monotonic() >= until:
                    return
                if sub.behind:
                    handed_out = self._cursor
                    batch = await self.db.run(events_after, owner, position, document_ids)
                    for event in batch:
                        yield event
                        position = event.id
                    if len(batch) < BATCH:
                        # Every event of ours the reader had handed out was committed
                        # before that read, so it was in the batch: we are past it.
                        position = max(position, handed_out)
                        if position >= self._cursor:
                            sub.behind = False  # caught up: the reader feeds us from here
                            sub.buffer.clear()
                    continue
                if not sub.buffer:
                    sub.wake.clear()
                    if until is None:
                        await sub.wake.wait()
                    else:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(sub.wake.wait(), until - time.monotonic())
                    continue
                event = sub.buffer.popleft()
                if event.id > position:  # a catch-up read may have passed it already
                    yield event
                    position = event.id
        finally:
            subs = self._subscribers.get(owner)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[owner]
