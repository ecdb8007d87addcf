"""The asyncio worker pool: claims documents from the queue and runs the pipeline.

One dispatcher loop claims documents whenever concurrency slots are free: as
many as there are free slots, oldest first, in one write (so they start in FIFO
order, and a burst of uploads fills every slot in one database round trip, not
one per slot); each claimed document runs in its own named task. The dispatcher
sleeps until a commit or a finished document wakes it (the commit through an
`on_commit` callback of the database), so an idle queue costs nothing and new
work starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from docintel.core import queue
from docintel.core.db import Database
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
        self._running: dict[str, asyncio.Task[None]] = {}  # document id → its task

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
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        if not self._running:
            return
        _, pending = await asyncio.wait(self._running.values(), timeout=grace)
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

    async def _dispatch(self) -> None:
        while not self._stop.is_set():
            free = self.concurrency - len(self._running)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                documents = await self.db.write(queue.claim, free)
            except Exception:
                log.exception("could not claim from the queue; retrying")
                documents = []
            if not documents:
                # Our own claim's commit set the flag. The database runs writes one
                # at a time, so any commit after our claim wakes us after this line.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_RECHECK_SECONDS)
                continue
            for document in documents:
                task = asyncio.create_task(
                    self.pipeline.run(document), name=f"docintel-doc-{document.id}"
                )
                self._running[document.id] = task
                task.add_done_callback(functools.partial(self._forget, document.id))

    def _forget(self, document_id: str, _: asyncio.Task[None]) -> None:
        self._running.pop(document_id, None)
        self._slot_freed.set()
