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
import functools
import logging
import time
from collections.abc import AsyncGenerator, Iterable, Sequence
from typing import Any, NamedTuple, cast

import peewee

from docintel.core.db import POSTGRES, Database, dialect, execute
from docintel.core.models import StatusEvent

log = logging.getLogger(__name__)
BATCH = 500  # events read per query, for the feed and for a replay


class Event(NamedTuple):
    """One event of the log, as streams send it: `data` is its JSON (the SSE `data:`).

    A NamedTuple, not a frozen dataclass: a replay builds one per event, and a
    frozen dataclass's __init__ (a setattr per field) cost four times as much.
    """

    id: int
    owner: str
    document_id: str
    data: str


def last_id() -> int:
    return int(StatusEvent.select(peewee.fn.COALESCE(peewee.fn.MAX(StatusEvent.id), 0)).scalar())


def events_after(
    owner: str | None, after: int, document_ids: Sequence[str] = (), limit: int = BATCH
) -> list[Event]:
    """Events with id > after, oldest first: one owner's (a replay), or everyone's (the feed).

    Each event's JSON is written by the database, in the same statement that
    reads it (see `_data_sql`): a replay of 100k events built 100k dicts and
    encoded them in Python, twice the time it took SQLite to read the rows.
    """
    where = ["e.id > ?"]
    params: list[Any] = [after]
    if owner is not None:
        where.append("e.owner = ?")
        params.append(owner)
    if document_ids:
        where.append(f"e.document_id IN ({', '.join('?' * len(document_ids))})")
        params += document_ids
    sql = (
        f"SELECT e.id, e.owner, e.document_id, {_data_sql(dialect())} FROM status_event e"
        " JOIN document d ON d.id = e.document_id"
        # Only `completed` events carry the analysis: the others skip the lookup.
        " LEFT JOIN analysis a ON e.status = 'completed' AND a.document_id = e.document_id"
        f" WHERE {' AND '.join(where)} ORDER BY e.id LIMIT ?"
    )
    rows = cast(Iterable[tuple[int, str, str, str]], execute(sql, (*params, limit)))
    return [Event(*row) for row in rows]


@functools.cache
def _data_sql(dialect: str) -> str:
    """The SQL expression of an event's JSON, byte for byte what the schema's
    `StreamEvent.model_dump_json(exclude_none=True)` writes (a test compares them;
    analyses saved before queue.py wrote its lists compact keep their `\\uXXXX`
    escapes there: the same JSON, not the same bytes).

    Keys in the schema's order, no spaces, strings escaped as json.dumps does
    with ensure_ascii=False (SQLite's json_quote, PostgreSQL's to_json, agree
    with it); `detail` is `error` on a failed event; empty parts are left out.
    """
    if dialect == POSTGRES:
        quote = "to_json(CAST({} AS text))::text"
        array = (
            "(SELECT '[' || COALESCE(string_agg(to_json(v)::text, ',' ORDER BY n), '') || ']'"
            " FROM jsonb_array_elements_text({}) WITH ORDINALITY AS t(v, n))"
        )
    else:
        quote = "json_quote({})"
        # The column as queue.py writes it (compact, non-ASCII kept), minified
        # should an older version have written it with spaces. (Re-quoting
        # json_each's values would cut strings at a NUL.)
        array = "json({})"
    q = quote.format

    def key(name: str, first: bool = False) -> str:
        return f"'{'{' if first else ','}\"{name}\":'"

    analysis = " || ".join(
        [
            f'\',"analysis":{{"summary":\' || {q("a.summary")}',
            f"{key('key_topics')} || {array.format('a.key_topics')}",
            f"{key('sentiment')} || {q('a.sentiment')}",
            f"{key('action_items')} || {array.format('a.action_items')}",
            f"{key('analyzer')} || {q('a.analyzer')}",
            f"{key('model')} || {q('a.model')} || '}}'",
        ]
    )
    return " || ".join(
        [
            f"{key('document_id', first=True)} || {q('e.document_id')}",
            f"{key('status')} || {q('e.status')}",
            f"{key('timestamp')} || {q('e.at')}",
            f"{key('filename')} || {q('d.filename')}",
            "CASE WHEN e.detail IS NULL OR e.detail = '' THEN ''"
            f" WHEN e.status = 'failed' THEN {key('error')} || {q('e.detail')}"
            f" ELSE {key('detail')} || {q('e.detail')} END",
            f"CASE WHEN a.document_id IS NULL THEN '' ELSE {analysis} END",
            "'}'",
        ]
    )


def history(document_id: str) -> list[StatusEvent]:
    return list(
        StatusEvent.select().where(StatusEvent.document_id == document_id).order_by(StatusEvent.id)
    )


_ALL: frozenset[str] = frozenset()  # a subscriber's document_ids: no filter


class _Subscriber:
    """One stream's place in the feed: the events handed to it, and its waiter.

    Kept small (slots, a list, a future only while it waits): an idle
    stream's memory is mostly this and its connection, times thousands. Its
    clocks are two timers for its whole life, not one per wait: a timeout
    around every wait cost more than the rest of a delivery together.
    """

    __slots__ = (
        "owner", "document_ids", "capacity", "buffer", "behind", "quiet", "expired",
        "_loop", "_waiter", "_idle", "_last", "_ticker", "_until", "_ender",
    )  # fmt: skip

    def __init__(
        self,
        owner: str,
        document_ids: frozenset[str],
        capacity: int,
        until: float | None,
        idle: float | None,
    ) -> None:
        self.owner = owner
        self.document_ids = document_ids
        self.capacity = capacity
        self.buffer: list[Event] = []
        self.behind = False  # the buffer overflowed: catch up from the log
        self.quiet = False  # `idle` seconds passed with nothing handed out
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._idle = idle
        self._last = self._loop.time()  # when the stream last took something
        self._ticker = None if idle is None else self._loop.call_later(idle, self._tick)
        self.expired = False  # `until` came: the stream ends
        self._until = until
        self._ender = (
            None if until is None else self._loop.call_later(until - time.monotonic(), self._end)
        )

    def offer(self, event: Event) -> None:
        if self.behind or (self.document_ids and event.document_id not in self.document_ids):
            return
        if len(self.buffer) >= self.capacity:
            self.behind = True
            self.buffer.clear()
        else:
            self.buffer.append(event)
        self.wake()

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Until something is offered, the stream has been quiet for `idle`, or ends."""
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def took(self) -> None:
        """The stream took a batch (or a keep-alive): quiet from now."""
        self._last = self._loop.time()
        self.quiet = False

    def _tick(self) -> None:
        assert self._idle is not None
        due = self._last + self._idle
        now = self._loop.time()
        if now >= due:
            self.quiet = True
            self.wake()
            due = now + self._idle
        self._ticker = self._loop.call_at(due, self._tick)

    def _end(self) -> None:
        # Against time.monotonic(), the clock `until` and the stream's reauth
        # test use: a loop's timers (uvloop's) may fire a little early.
        assert self._until is not None
        left = self._until - time.monotonic()
        if left > 0:
            self._ender = self._loop.call_later(left, self._end)
            return
        self.expired = True
        self.wake()

    def close(self) -> None:
        for timer in (self._ticker, self._ender):
            if timer is not None:
                timer.cancel()


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
                sub.wake()

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
        idle: float | None = None,
    ) -> AsyncGenerator[list[Event], None]:
        """The owner's events with id > after, then live ones, in batches, until the
        feed stops (or, with `until`, that `time.monotonic()` is reached).

        `after=None` starts at the end of the log. Each batch is every event that
        is ready (a replay's read, or what arrived since the last batch), so that
        a stream writes it at once; with `idle`, an empty batch says that nothing
        came for that many seconds (a stream's cue for a keep-alive).
        """
        ids = frozenset(document_ids) if document_ids else _ALL  # one empty set for all
        sub = _Subscriber(owner, ids, self.buffer, until, idle)
        self._subscribers.setdefault(owner, set()).add(sub)
        try:
            position = self._cursor if after is None else after
            # Replay what the reader had handed out before we subscribed; it
            # also serves a subscriber that fell behind (the same catch-up).
            sub.behind = position < self._cursor
            while not self._stopping.is_set():
                if sub.expired or (until is not None and time.monotonic() >= until):
                    return
                if sub.behind:
                    handed_out = self._cursor
                    read = asyncio.ensure_future(
                        self.db.run(events_after, owner, position, document_ids)
                    )
                    read.add_done_callback(lambda _: sub.wake())
                    try:
                        # A read that waits (a database that hangs) still lets
                        # the stream send its keep-alives, and end on time.
                        while not read.done():
                            if sub.expired or self._stopping.is_set():
                                return
                            if sub.quiet:
                                yield []
                                sub.took()
                            else:
                                await sub.wait()
                    finally:
                        read.cancel()  # nothing to cancel once it is done
                    batch = read.result()
                    if batch:
                        yield batch
                        sub.took()
                        position = batch[-1].id
                    if len(batch) < BATCH:
                        # Every event of ours the reader had handed out was committed
                        # before that read, so it was in the batch: we are past it.
                        position = max(position, handed_out)
                        if position >= self._cursor:
                            sub.behind = False  # caught up: the reader feeds us from here
                            sub.buffer.clear()
                    continue
                if sub.buffer:
                    # A catch-up read may have passed some of them already.
                    batch = [event for event in sub.buffer if event.id > position]
                    sub.buffer.clear()
                    if batch:
                        yield batch
                        sub.took()
                        position = batch[-1].id
                elif sub.quiet:
                    yield []
                    sub.took()
                else:
                    await sub.wait()
        finally:
            sub.close()
            subs = self._subscribers.get(owner)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[owner]
