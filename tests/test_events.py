"""The event feed: one reader fans each event out; every stream gets exactly its own, in order.

On both backends (a real SQLite file, a real PostgreSQL database), real writers (the queue's transitions through `Database.write`),
many users and streams at once, slow readers that fall behind and catch up
from the log, and streams that resume mid-way from an event id.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from docintel.core import events, queue
from docintel.core.analysis import AnalysisResult
from docintel.core.db import Database
from docintel.core.events import EventFeed
from docintel.core.models import StatusEvent
from docintel.server.schemas import StreamEvent

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
        async for batch in stream:
            assert all(event.owner == owner for event in batch)
            got += [event.id for event in batch]
            if slow:
                await asyncio.sleep(0.002)  # falls behind the feed's small buffer
            if len(got) >= count:
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
            async for batch in feed.follow("alice", None):
                seen.extend(json.loads(event.data)["status"] for event in batch)

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
        seen = [event.id for event in await anext(partial)]
        await partial.aclose()
        assert seen == log[: events.BATCH]
        assert feed.open_streams == 0
        await feed.stop()
        await db.close()

    asyncio.run(scenario())


TEXTS = [
    "plain",
    "é 中文 😀",
    'q"b\\s',
    "nl\ntab\tcr\r\x1f\x7f\x08\x0c/",
    "\u2028\u2029",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_the_databases_event_json_is_the_schemas(target: str | Path, text: str) -> None:
    """The JSON the database writes for each event (SSE `data:`, WebSocket `data`) is,
    byte for byte, what the schema's model writes, whatever the strings hold."""
    assert_event_json_is_the_schemas(target, text)


def test_a_nul_in_a_string_survives_sqlites_event_json(tmp_path: Path) -> None:
    """SQLite only: PostgreSQL's text cannot hold NUL (re-quoting a JSON array's
    values in SQLite would cut them there, which is why the lists are copied)."""
    assert_event_json_is_the_schemas(tmp_path / "feed.db", "a\x00b")


def assert_event_json_is_the_schemas(target: str | Path, text: str) -> None:
    async def scenario() -> None:
        db, feed = await open_feed(target)
        analysis = {
            "summary": text,
            "key_topics": [text, "x"],
            "sentiment": "mixed",
            "action_items": [text],
            "analyzer": "offline",
            "model": text,
        }
        empty = {**analysis, "key_topics": [], "action_items": []}
        for n, (result, failure) in enumerate([(analysis, None), (empty, None), (None, text)]):
            doc = queue.NewDocument(f"{n}{'e' * 31}", "alice", text, "x.txt", 1, "text/plain", "0")
            await db.write(queue.enqueue, doc)
            await db.write(queue.transition, doc.id, ["pending"], "processing", detail=text)
            if failure is None:
                await db.write(
                    queue.transition, doc.id, ["processing"], "completed", analysis=result
                )
            else:
                await db.write(queue.transition, doc.id, ["processing"], "failed", error=failure)
        got = await db.run(events.events_after, "alice", 0)
        assert [json.loads(e.data)["status"] for e in got] == [
            "pending", "processing", "completed", "pending", "processing", "completed",
            "pending", "processing", "failed",
        ]  # fmt: skip
        for event in got:
            row = await db.run(lambda i=event.id: StatusEvent.get_by_id(i))
            expected = StreamEvent(
                document_id=event.document_id,
                status=row.status,
                timestamp=row.at,
                filename=text,
                detail=row.detail if row.status != "failed" and row.detail else None,
                error=row.detail if row.status == "failed" and row.detail else None,
                analysis=(
                    AnalysisResult.model_validate(
                        analysis if event.document_id[0] == "0" else empty
                    )
                    if row.status == "completed"
                    else None
                ),
            )
            assert event.data == expected.model_dump_json(exclude_none=True)
        await feed.stop()
        await db.close()

    asyncio.run(scenario())


def test_a_quiet_stream_gets_an_empty_batch_after_idle_seconds(target: str | Path) -> None:
    """`idle`: an empty batch when nothing came (a stream's cue for a keep-alive),
    then the events as usual, in order."""

    async def scenario() -> None:
        db, feed = await open_feed(target)
        stream = feed.follow("alice", None, idle=0.05)
        assert await asyncio.wait_for(anext(stream), 5) == []
        reading = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.01)  # subscribed, waiting
        for n in range(3):
            await db.write(queue.enqueue, new_document(f"{n}{'q' * 31}", "alice"))
        batch = await asyncio.wait_for(reading, 5)
        log = [e.id for e in await db.run(events.events_after, "alice", 0)]
        rest: list[int] = []
        while len(batch) + len(rest) < 3:
            rest += [e.id for e in await asyncio.wait_for(anext(stream), 5)]
        assert [e.id for e in batch] + rest == log
        await stream.aclose()
        await feed.stop()
        await db.close()

    asyncio.run(scenario())


def test_a_stream_keeps_alive_while_its_catch_up_read_waits(postgres_url: str) -> None:
    """A replay's read that waits (here for a lock another session holds on the
    log) still gives the stream its keep-alives, then every event, in order."""
    import psycopg

    async def scenario() -> None:
        db, feed = await open_feed(postgres_url)
        for n in range(3):
            await db.write(queue.enqueue, new_document(f"{n}{'k' * 31}", "alice"))
        log = [e.id for e in await db.run(events.events_after, "alice", 0)]
        stream = feed.follow("alice", 0, idle=0.1)
        with psycopg.connect(postgres_url) as locker:
            locker.execute("LOCK TABLE status_event IN ACCESS EXCLUSIVE MODE")
            # The replay's first read now waits for the lock: keep-alives meanwhile.
            for _ in range(3):
                assert await asyncio.wait_for(anext(stream), 5) == []
            locker.commit()
        got: list[int] = []
        while len(got) < len(log):
            got += [e.id for e in await asyncio.wait_for(anext(stream), 5)]
        assert got == log
        await stream.aclose()
        await feed.stop()
        await db.close()

    asyncio.run(scenario())
