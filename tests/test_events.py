"""The event feed: one reader fans each event out; every stream gets exactly its own, in order.

On both backends (a real SQLite file, a real PostgreSQL database), real writers (the queue's transitions through `Database.write`),
many users and streams at once, slow readers that fall behind and catch up
from the log, and streams that resume mid-way from an event id.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from docintel.core import events, queue
from docintel.core.db import Database
from docintel.core.events import EventFeed

USERS = [f"user{i}" for i in range(5)]


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where the feed's database is: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "feed.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


STAGES = [("pending", "processing"), ("processing", "analyzing"), ("analyzing", "completed")]


async def open_feed(target: str | Path, buffer: int = 1000) -> tuple[Database, EventFeed]:
    """The database and its feed, as the service wires them: every commit wakes the feed."""
    db = Database(target)
    await db.open()
    feed = EventFeed(db, buffer=buffer)
    db.on_commit.append(feed.notify)
    await feed.start()
    return db, feed


def new_document(doc_id: str, owner: str) -> queue.NewDocument:
    return queue.NewDocument(
        id=doc_id,
        owner=owner,
        filename=f"{doc_id}.txt",
        stored_name=f"{doc_id}.txt",
        size_bytes=1,
        content_type="text/plain",
        sha256="0" * 64,
    )


async def write_traffic(db: Database, documents: int, seed: int) -> list[tuple[str, str]]:
    """Documents of every user, each moved through its stages, interleaved at random."""
    rng = random.Random(seed)
    ids = [(f"{seed:02d}{i:030d}", USERS[i % len(USERS)]) for i in range(documents)]
    for doc_id, owner in ids:
        await db.write(queue.enqueue, new_document(doc_id, owner))
    steps = [(doc_id, stage) for doc_id, _ in ids for stage in STAGES]
    # Keep each document's own stages in order, interleave documents at random.
    rng.shuffle(steps)
    done: dict[str, int] = {}
    pending = steps
    while pending:
        later = []
        for doc_id, (current, status) in pending:
            if STAGES.index((current, status)) == done.get(doc_id, 0):
                assert await db.write(queue.transition, doc_id, (current,), status)
                done[doc_id] = done.get(doc_id, 0) + 1
                if rng.random() < 0.2:
                    await asyncio.sleep(0)  # let readers in mid-traffic
            else:
                later.append((doc_id, (current, status)))
        pending = later
    return ids


async def collect(
    feed: EventFeed,
    owner: str,
    after: int | None,
    document_ids: Sequence[str],
    count: int,
    slow: bool = False,
) -> list[int]:
    got: list[int] = []
    stream = feed.follow(owner, after, document_ids)
    try:
        async for event in stream:
            assert event.owner == owner
            got.append(event.id)
            if slow:
                await asyncio.sleep(0.002)  # falls behind the feed's small buffer
            if len(got) == count:
                break
    finally:
        await stream.aclose()
    return got


@pytest.mark.parametrize("buffer", [3, 1000], ids=["tiny-buffers", "roomy-buffers"])
def test_every_stream_gets_exactly_its_own_events_in_order(target: str | Path, buffer: int) -> None:
    async def scenario() -> None:
        db, feed = await open_feed(target, buffer)
        start = await db.run(events.last_id)
        documents = 40
        per_user = documents // len(USERS) * (1 + len(STAGES))
        # Streams open before the traffic: 4 per user from "now", one of them slow.
        streams = {}
        for owner in USERS:
            for n in range(4):
                streams[(owner, n)] = asyncio.create_task(
                    collect(feed, owner, None, (), per_user, slow=(n == 0))
                )
        await asyncio.sleep(0.01)  # every stream has subscribed
        assert feed.open_streams == len(streams)
        ids = await write_traffic(db, documents, seed=buffer)
        got = {key: await task for key, task in streams.items()}

        for owner in USERS:
            expected = [e.id for e in await db.run(events.events_after, owner, start, (), 10_000)]
            assert len(expected) == per_user
            for n in range(4):
                assert got[(owner, n)] == expected, (owner, n)

        # Resume mid-way: exactly the events after the given id, of this user only.
        owner = USERS[1]
        log = [e.id for e in await db.run(events.events_after, owner, start, (), 10_000)]
        middle = log[len(log) // 2]
        resumed = await collect(feed, owner, middle, (), len(log) - len(log) // 2 - 1)
        assert resumed == log[len(log) // 2 + 1 :]

        # Filtered by document: only those documents' events.
        mine = [doc_id for doc_id, o in ids if o == owner][:2]
        wanted = [e.id for e in await db.run(events.events_after, owner, start, mine, 10_000)]
        assert await collect(feed, owner, start, mine, len(wanted)) == wanted

        assert feed.open_streams == 0
        await feed.stop()
        await db.close()

    asyncio.run(scenario())


def test_a_live_stream_sees_new_events_and_ends_when_the_feed_stops(target: str | Path) -> None:
    async def scenario() -> None:
        db, feed = await open_feed(target)
        seen: list[str] = []

        async def follow() -> None:
            async for event in feed.follow("alice", None):
                seen.append(event.status)

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.01)
        await db.write(queue.enqueue, new_document("a" * 32, "alice"))
        await db.write(queue.enqueue, new_document("b" * 32, "bob"))  # not alice's
        while not seen:
            await asyncio.sleep(0.005)
        await feed.stop()
        await asyncio.wait_for(task, 5)  # the stream ended by itself
        assert seen == ["pending"]
        await db.close()

    asyncio.run(scenario())


def test_a_replay_of_several_batches_loses_nothing(target: str | Path) -> None:
    """A replay longer than one read: every event once, in order; leaving mid-way frees it."""

    async def scenario() -> None:
        db, feed = await open_feed(target)
        for i in range(330):  # 330 documents × 4 events: three batches and a bit
            doc_id = f"r{i:031d}"
            await db.write(queue.enqueue, new_document(doc_id, "alice"))
            for current, status in STAGES:
                await db.write(queue.transition, doc_id, [current], status)
        log = [e.id for e in await db.run(events.events_after, "alice", 0, (), 10_000)]
        assert len(log) == 1320
        assert await collect(feed, "alice", 0, (), len(log)) == log
        # A stream that leaves mid-replay frees its subscription.
        partial = feed.follow("alice", 0)
        seen = [event.id async for event in _first(partial, 700)]
        await partial.aclose()
        assert seen == log[:700]
        assert feed.open_streams == 0
        await feed.stop()
        await db.close()

    asyncio.run(scenario())


async def _first(events_: Any, n: int) -> Any:
    count = 0
    async for event in events_:
        yield event
        count += 1
        if count == n:
            return
