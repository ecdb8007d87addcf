"""The running service: database, event bus, storage, analyzer and workers, wired.

The server builds one `DocumentService` from Settings, starts it in its
lifespan and calls it from routes; nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docintel.core import events, queue
from docintel.core.analysis import build_analyzer, describe_choice
from docintel.core.config import Settings
from docintel.core.db import Database
from docintel.core.errors import DocumentNotFound
from docintel.core.events import Event, EventBus
from docintel.core.models import Analysis, Document, StatusEvent
from docintel.core.pipeline import Pipeline, limits_for
from docintel.core.storage import Storage, safe_name
from docintel.core.workers import WorkerPool

log = logging.getLogger(__name__)


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
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.db_path)
        self.bus = EventBus()
        self.storage = Storage(settings.data_dir)
        self.analyzer = build_analyzer(settings)
        self.pipeline = Pipeline(
            self.db, self.bus, self.storage, self.analyzer, limits_for(settings)
        )
        self.workers = WorkerPool(self.db, self.bus, self.pipeline, settings.workers)
        self.stopping = asyncio.Event()
        self.open_streams = 0

    async def start(self) -> None:
        await asyncio.to_thread(self.storage.prepare)
        await self.db.open()
        for document in await self.db.run(queue.requeue_interrupted):
            log.warning("document %s was interrupted; now %s", document.id, document.status)
        known = await self.db.run(lambda: {d.id for d in Document.select(Document.id)})
        for orphan in await asyncio.to_thread(self.storage.sweep, known):
            log.warning("removed upload folder %s with no document", orphan)
        self.workers.start()
        log.info("analyzer: %s; workers: %d", describe_choice(self.settings), self.settings.workers)

    async def stop(self) -> None:
        self.begin_shutdown()
        await self.workers.stop()
        aclose = getattr(self.analyzer, "aclose", None)
        if aclose is not None:
            await aclose()
        await self.db.close()

    def begin_shutdown(self) -> None:
        """Ends every open stream now (before the HTTP server waits on them)."""
        self.stopping.set()
        self.bus.notify()

    # --- documents ---------------------------------------------------------

    async def accept(self, owner: str, received: Received) -> Document:
        """Store an accepted upload and queue it (`pending`)."""
        document_id = uuid.uuid4().hex
        stored_name = safe_name(received.filename)
        await asyncio.to_thread(self.storage.place, received.path, document_id, stored_name)
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
            document = await self.db.run(queue.enqueue, new)
        except BaseException:
            await asyncio.to_thread(self.storage.remove, document_id)
            raise
        self.bus.notify()
        return document

    async def list(
        self, owner: str, statuses: Sequence[str] = (), limit: int = 50, offset: int = 0
    ) -> tuple[list[Document], int]:
        def query() -> tuple[list[Document], int]:
            q = Document.select().where(Document.owner == owner)
            if statuses:
                q = q.where(Document.status.in_(list(statuses)))
            return list(q.order_by(Document.seq.desc()).limit(limit).offset(offset)), q.count()

        return await self.db.run(query)

    async def get(self, owner: str, document_id: str) -> DocumentDetail:
        def query() -> DocumentDetail:
            document = _owned(owner, document_id)
            analysis = Analysis.get_or_none(Analysis.document_id == document_id)
            return DocumentDetail(
                document, events.history(document_id), analysis.as_dict() if analysis else None
            )

        return await self.db.run(query)

    async def status(self, owner: str, document_id: str) -> Document:
        return await self.db.run(_owned, owner, document_id)

    async def delete(self, owner: str, document_id: str) -> None:
        """Delete in any status; a worker holding it finds it gone and drops its result."""

        def remove() -> None:
            _owned(owner, document_id).delete_instance()  # cascades to events and analysis

        await self.db.run(remove)
        self.workers.cancel(document_id)
        await asyncio.to_thread(self.storage.remove, document_id)

    # --- the stream --------------------------------------------------------

    async def follow(
        self, owner: str, after: int | None, document_ids: Sequence[str] = ()
    ) -> AsyncGenerator[Event, None]:
        """Events of the owner's documents with id > after, then live ones, until shutdown.

        Replay and live tail are one loop over the log by id, so nothing is
        lost or repeated between them. `after=None` starts at the log's end.
        """
        self.open_streams += 1
        try:
            async for event in self._follow(owner, after, document_ids):
                yield event
        finally:
            self.open_streams -= 1

    async def _follow(
        self, owner: str, after: int | None, document_ids: Sequence[str]
    ) -> AsyncIterator[Event]:
        with self.bus.subscribe() as wake:
            if after is None:
                after = await self.db.run(events.last_id)
            while not self.stopping.is_set():
                wake.clear()  # before reading: a commit after the read sets it again
                batch = await self.db.run(events.events_after, owner, after, document_ids)
                for event in batch:
                    yield event
                    after = event.id
                if not batch:
                    await wake.wait()  # begin_shutdown() sets it too


def _owned(owner: str, document_id: str) -> Document:
    """The document if it exists and belongs to owner; others' documents are 'not found'."""
    document = Document.get_or_none((Document.id == document_id) & (Document.owner == owner))
    if document is None:
        raise DocumentNotFound(f"No document with id {document_id!r}.")
    return document
