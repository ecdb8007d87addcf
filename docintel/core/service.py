"""The running service: database, event feed, storage, analyzer and workers, wired.

The server builds one `DocumentService` from Settings, starts it in its
lifespan and calls it from routes; nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import peewee

from docintel.core import events, queue
from docintel.core.analysis import build_analyzer, describe_choice
from docintel.core.config import Settings
from docintel.core.db import POSTGRES, Database, database, describe, dialect
from docintel.core.errors import (
    AmbiguousId,
    DocumentNotFound,
    IdTooShort,
    InsufficientStorage,
)
from docintel.core.events import EventFeed
from docintel.core.listener import Listener
from docintel.core.models import Analysis, Document, DocumentCount, StatusEvent
from docintel.core.pipeline import Pipeline, limits_for
from docintel.core.storage import Storage, is_out_of_space, safe_name
from docintel.core.workers import WorkerPool

log = logging.getLogger(__name__)
T = TypeVar("T")

ID_LENGTH = 32  # uuid4().hex
MIN_ID_PREFIX = 4
SHOWN_CANDIDATES = 5
HEX_DIGITS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Received:
    """An upload that streamed in whole and passed validation, still in incoming/."""

    filename: str
    path: Path
    size_bytes: int
    content_type: str
    sha256: str


@dataclass(frozen=True)
class DocumentDetail:
    document: Document
    history: list[StatusEvent]
    analysis: dict[str, Any] | None


class DocumentService:
    def __init__(self, settings: Settings, *, streams: bool = True) -> None:
        """`streams=False`: a process that serves no event streams (`docintel
        worker`) never reads the event log; its feed stays idle. Otherwise every
        worker process would read every new event of the cluster after each commit."""
        self.settings = settings
        self.streams = streams
        self.db = Database(settings.database)
        self.feed = EventFeed(self.db)
        if streams:
            self.db.on_commit.append(self.feed.notify)
        self.storage = Storage(settings.data_dir, shared=settings.shared_database)
        self.analyzer = build_analyzer(settings)
        self.pipeline = Pipeline(
            self.db,
            self.storage,
            self.analyzer,
            limits_for(settings),
            write_retry=settings.status_write_retry,
        )
        self.workers = WorkerPool(
            self.db, self.pipeline, settings.workers, lease=settings.lease_seconds
        )
        # With PostgreSQL, other processes commit too: hear of their commits.
        self.listener = (
            Listener(settings.database_url, self.db.on_commit) if settings.shared_database else None
        )

    @property
    def open_streams(self) -> int:
        return self.feed.open_streams

    async def start(self) -> None:
        await asyncio.to_thread(self.storage.prepare)
        await self.db.open()
        log.info("database: %s", describe(self.settings.database))
        if not self.settings.shared_database:
            # This process owns the embedded database (server.lock): whatever is
            # in flight was left by one that died. With PostgreSQL other nodes
            # are alive; documents of dead ones come back as their leases expire.
            for document in await self.db.write(queue.requeue_interrupted):
                log.warning("document %s was interrupted; now %s", document.id, document.status)
        known = await self.db.run(lambda: {d.id for d in Document.select(Document.id)})
        for orphan in await asyncio.to_thread(self.storage.sweep, known):
            log.warning("removed upload folder %s with no document", orphan)
        if self.streams:
            await self.feed.start()
        if self.listener is not None:
            self.listener.start()
        self.workers.start()
        log.info("analyzer: %s; workers: %d", describe_choice(self.settings), self.settings.workers)

    async def stop(self) -> None:
        self.begin_shutdown()
        await self.workers.stop()
        if self.listener is not None:
            await self.listener.stop()
        await self.feed.stop()
        aclose = getattr(self.analyzer, "aclose", None)
        if aclose is not None:
            await aclose()
        await self.db.close()

    def begin_shutdown(self) -> None:
        """Ends every open stream now (before the HTTP server waits on them)."""
        self.feed.end_streams()

    # --- documents ---------------------------------------------------------

    async def accept(self, owner: str, received: Received) -> Document:
        """Store an accepted upload and queue it (`pending`): both, or neither.

        Raises `InsufficientStorage` when the disk (or its inodes, or the
        database) is full; nothing of this document is left behind then.
        """
        document_id = uuid.uuid4().hex
        stored_name = safe_name(received.filename)
        new = queue.NewDocument(
            id=document_id,
            owner=owner,
            filename=received.filename,
            stored_name=stored_name,
            size_bytes=received.size_bytes,
            content_type=received.content_type,
            sha256=received.sha256,
        )
        try:
            await asyncio.to_thread(self.storage.place, received.path, document_id, stored_name)
            document = await self.db.write(queue.enqueue, new)
        except BaseException as exc:
            # No file without a row: also a folder made before the rename failed.
            await asyncio.to_thread(self.storage.remove, document_id)
            if is_out_of_space(exc):
                raise self.storage.full_error(
                    exc, f"{received.filename!r} was not stored"
                ) from None
            raise
        return document

    async def accept_all(
        self, owner: str, batch: Sequence[Received]
    ) -> tuple[list[Document], list[tuple[str, InsufficientStorage]]]:
        """Store and queue each upload of a batch, in order, until the disk is full.

        Returns what was accepted and, for each file not stored, why. Once one
        file found no room, the rest are not tried: storing the smaller ones
        would fill the disk to the last byte and starve the workers' writes.
        """
        accepted: list[Document] = []
        refused: list[tuple[str, InsufficientStorage]] = []
        for received in batch:
            if refused:
                what = f"{received.filename!r} was not stored"
                refused.append((received.filename, InsufficientStorage(what, refused[0][1].reason)))
                continue
            try:
                accepted.append(await self.accept(owner, received))
            except InsufficientStorage as exc:
                refused.append((received.filename, exc))
        return accepted, refused

    async def list(
        self, owner: str, statuses: Sequence[str] = (), limit: int = 50, offset: int = 0
    ) -> Page:
        return await self.db.run(_as_of_now, list_documents, owner, statuses, limit, offset)

    async def get(self, owner: str, document_id: str) -> Snapshot[DocumentDetail]:
        return await self.db.run(_as_of_now, document_detail, owner, document_id)

    async def status(self, owner: str, document_id: str) -> Document:
        return await self.db.run(_owned, owner, document_id)

    async def missing(self, owner: str, document_ids: Sequence[str]) -> builtins.list[str]:
        """Which of these full ids are no longer the owner's documents (deleted).

        A deletion writes no event (the document's events go with it), so a
        stream that follows documents asks this when it is quiet."""
        return await self.db.run(missing_documents, owner, document_ids)

    async def delete(self, owner: str, document_id: str) -> None:
        """Delete in any status; a worker holding it finds it gone and drops its result."""

        def remove() -> str:
            document = _owned(owner, document_id)
            document.delete_instance()  # cascades to events and analysis
            return document.id

        try:
            full_id = await self.db.write(remove)
        except peewee.OperationalError as exc:
            # SQLite needs room to record even a deletion; the row stays as it was.
            if is_out_of_space(exc):
                raise self.storage.full_error(exc, "The document was not deleted") from None
            raise
        self.workers.cancel(full_id)
        await asyncio.to_thread(self.storage.remove, full_id)


@dataclass(frozen=True)
class Snapshot(Generic[T]):
    """What a read returned, and the last event id it reflects.

    Reads and writes run one at a time on the database thread, so nothing is
    committed between the read and `last_id`: a client that streams from that
    id gets exactly the changes after what it read, nothing missed or repeated.
    """

    value: T
    last_event_id: int


Page = Snapshot[tuple[list[Document], int]]


def _as_of_now(read: Callable[..., T], *args: Any) -> Snapshot[T]:
    if dialect() == POSTGRES:
        # Other processes commit at any time: one snapshot for both reads.
        with database.atomic(isolation_level="REPEATABLE READ"):
            return Snapshot(read(*args), events.last_id())
    return Snapshot(read(*args), events.last_id())


def list_documents(
    owner: str, statuses: Sequence[str] = (), limit: int = 50, offset: int = 0
) -> tuple[list[Document], int]:
    """A page of the owner's documents, newest first, and how many there are in all.

    The total is read from the counts the triggers keep (db.m004), not counted:
    it costs the same for 10 documents or 100k.
    """
    page = Document.select().where(Document.owner == owner)
    total = DocumentCount.select(peewee.fn.COALESCE(peewee.fn.SUM(DocumentCount.n), 0)).where(
        DocumentCount.owner == owner
    )
    if statuses:
        page = page.where(Document.status.in_(list(statuses)))
        total = total.where(DocumentCount.status.in_(list(statuses)))
    return list(page.order_by(Document.seq.desc()).limit(limit).offset(offset)), int(total.scalar())


def document_detail(owner: str, document_id: str) -> DocumentDetail:
    document = _owned(owner, document_id)
    analysis = Analysis.get_or_none(Analysis.document_id == document.id)
    return DocumentDetail(
        document, events.history(document.id), analysis.as_dict() if analysis else None
    )


def missing_documents(owner: str, document_ids: Sequence[str]) -> list[str]:
    wanted = Document.id.in_(list(document_ids))
    present = {d.id for d in Document.select(Document.id).where((Document.owner == owner) & wanted)}
    return [i for i in document_ids if i not in present]


def _owned(owner: str, document_id: str) -> Document:
    """The owner's document with this id, or the only one whose id starts with it.

    Ids are lowercase hex, so the ids starting with `key` are exactly those in
    [key, key + "g"): one range scan of the (owner, id) index, stopped after a
    few rows. Other users' documents are never matched ('not found').
    """
    key = document_id.strip().lower()
    if len(key) < MIN_ID_PREFIX:
        raise IdTooShort(
            f"The id {document_id!r} is too short: give at least {MIN_ID_PREFIX} "
            "characters of it (the tables show 8)."
        )
    if len(key) > ID_LENGTH or not set(key) <= HEX_DIGITS:
        raise DocumentNotFound(f"No document with id {document_id!r}.")
    matches = list(
        Document.select()
        .where((Document.owner == owner) & (Document.id >= key) & (Document.id < key + "g"))
        .order_by(Document.id)
        .limit(SHOWN_CANDIDATES + 1)
    )
    if not matches:
        raise DocumentNotFound(f"No document with id {document_id!r}.")
    if len(matches) == 1:
        return matches[0]
    raise _ambiguous(document_id, matches)


def _ambiguous(document_id: str, matches: list[Document]) -> AmbiguousId:
    shown = matches[:SHOWN_CANDIDATES]
    # Long enough to tell the candidates apart, and never shorter than the tables' 8.
    width = max(8, len(os.path.commonprefix([d.id for d in shown])) + 1)
    listed = "; ".join(f"{d.id[:width]} ({d.filename}, {d.status})" for d in shown)
    count = f"more than {SHOWN_CANDIDATES}" if len(matches) > len(shown) else str(len(shown))
    return AmbiguousId(
        f"The id {document_id!r} matches {count} documents: {listed}. Give more of the id.",
        [{"id": d.id, "filename": d.filename, "status": d.status} for d in shown],
    )
