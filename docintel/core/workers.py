"""The asyncio worker pool: claims documents from the queue and runs the pipeline.

A document runs in a named task that holds one concurrency slot. Its last
write (`completed` or `failed`) also claims the next pending document, which
the same task then runs: while the queue has work, one database round trip
separates two documents. When that claim finds the queue empty the task ends
and frees its slot.

The dispatcher fills free slots: it claims as many documents as there are
free slots, oldest first, in one write (so a burst of uploads fills every slot
in one round trip), and starts a task for each. It sleeps until a commit or a
freed slot wakes it (the commit through an `on_commit` callback of the
database), so an idle queue costs nothing and new work starts at once.

Every claim goes through the one database thread and takes the oldest pending
documents, so documents start in upload order whoever claims them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from docintel.core import queue
from docintel.core.db import Database
from docintel.core.models import Document
from docintel.core.pipeline import Pipeline

log = logging.getLogger(__name__)

# A safety net only: every commit wakes the dispatcher.
IDLE_RECHECK_SECONDS = 30.0


class WorkerPool:
    def __init__(self, db: Database, pipeline: Pipeline, concurrency: int) -> None:
        self.db = db
        self._wake = asyncio.Event()
        db.on_commit.append(self._wake.set)
        self.pipeline = pipeline
        self.concurrency = concurrency
        self._slot_freed = asyncio.Event()
        self._stop = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # one per busy slot
        self._running: dict[str, asyncio.Task[None]] = {}  # document id → the task running it

    def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name="docintel-dispatcher")

    def cancel(self, document_id: str) -> None:
        """Stop work on a document (it was deleted): frees the slot, kills its parser."""
        task = self._running.get(document_id)
        if task is not None:
            task.cancel()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; give running documents `grace` seconds, then put them back.

        A document cut short by a clean stop goes back to `pending` without the
        attempt counting against it; only unclean exits (a crash, kill -9) are
        counted, by `queue.requeue_interrupted` at the next start.
        """
        self._stop.set()
        if self._dispatcher:
            # Woken rather than cancelled: a claim it has in flight would be lost.
            self._wake.set()
            self._slot_freed.set()
            await self._dispatcher
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        cut_short = [doc_id for doc_id, task in self._running.items() if task in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if cut_short:
            await self.db.write(queue.release, cut_short)
            log.info(
                "put %d document(s) back in the queue; they resume at the next start",
                len(cut_short),
            )

    def _claiming(self) -> bool:
        return not self._stop.is_set()

    async def _dispatch(self) -> None:
        while not self._stop.is_set():
            free = self.concurrency - len(self._tasks)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                documents = await self.db.write(queue.claim, free)
            except Exception:
                log.exception("could not claim from the queue; retrying")
                documents = []
            if self._stop.is_set():
                await self._put_back(documents)
                return
            if not documents:
                # Our own claim's commit set the flag. The database runs writes one
                # at a time, so any commit after our claim wakes us after this line.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_RECHECK_SECONDS)
                continue
            for document in documents:
                task = asyncio.create_task(
                    self._work(document), name=f"docintel-worker-{document.id}"
                )
                self._tasks.add(task)
                task.add_done_callback(self._forget)

    async def _work(self, document: Document) -> None:
        """Run `document`, then each next one its last write claimed, until there is none."""
        task = asyncio.current_task()
        assert task is not None
        claimed: Document | None = document
        while claimed is not None:
            document = claimed
            self._running[document.id] = task
            try:
                claimed = await self.pipeline.run(document, claim_next=self._claiming)
            finally:
                del self._running[document.id]
            if claimed is not None and self._stop.is_set():
                await self._put_back([claimed])  # claimed as the server began to stop
                return

    async def _put_back(self, documents: list[Document]) -> None:
        if documents:
            await self.db.write(
                queue.release, [d.id for d in documents], "claimed as the server stopped"
            )

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()
