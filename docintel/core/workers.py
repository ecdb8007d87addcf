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

Each claim leases its documents to this pool (`worker_id`) for `lease`
seconds. A heartbeat renews every lease the pool holds, in one statement, a
third of the way through; a document whose lease the heartbeat no longer finds
(rescued by another worker after this one was cut off, or deleted) is dropped
here, and if the heartbeat itself fails for half the lease the pool drops all
its documents: by the time anyone may rescue them, this pool has stopped. The
same loop rescues documents whose lease expired, whoever held them, so work
of a worker that died (kill -9, a lost node) is finished elsewhere.

A shortage (a full disk, a busy database) must not leave a document in flight
with nobody working on it: when the pipeline cannot write a document's status
(`Unwritable`), the slot is freed and the document goes to a requeue task,
which keeps trying, with backoff, to put it back to `pending` and ends once it
has. A claim that fails for such a cause is retried with backoff too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

from docintel.core import queue
from docintel.core.config import is_postgres
from docintel.core.db import Database
from docintel.core.errors import transient_cause
from docintel.core.models import Document
from docintel.core.pipeline import Pipeline, Unwritable

log = logging.getLogger(__name__)

# A safety net only: every commit wakes the dispatcher.
IDLE_RECHECK_SECONDS = 30.0
# A failed claim or requeue is tried again after 0.5 s, 1 s… at most this far apart.
RETRY_MAX_DELAY = 10.0


class WorkerPool:
    def __init__(
        self, db: Database, pipeline: Pipeline, concurrency: int, lease: float = queue.LEASE_SECONDS
    ) -> None:
        self.db = db
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.shared = is_postgres(db.target)  # other processes claim from the same queue
        self.lease = lease
        pipeline.lease_owner, pipeline.lease = self.worker_id, lease
        self._heartbeat: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        db.on_commit.append(self._wake.set)
        self.pipeline = pipeline
        self.concurrency = concurrency
        self._slot_freed = asyncio.Event()
        self._stop = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # one per busy slot
        self._running: dict[str, asyncio.Task[None]] = {}  # document id → the task running it
        # Documents whose status could not be written: id → cause, until requeued.
        self._unwritten: dict[str, str] = {}
        self._requeuer: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.concurrency < 1:
            return  # an API-only process (serve --workers 0): no claims, no leases
        self._dispatcher = asyncio.create_task(self._dispatch(), name="docintel-dispatcher")
        self._heartbeat = asyncio.create_task(self._keep_leases(), name="docintel-heartbeat")

    async def _keep_leases(self) -> None:
        """Renew this pool's leases and rescue expired ones, every third of a lease."""
        renewed_at = time.monotonic()
        suspects: set[str] = set()
        while True:
            await asyncio.sleep(self.lease / 3)
            # Only documents claimed before the renewal can be judged by it: one
            # claimed while it ran is ours, whatever the renewal returned.
            running = set(self._running)
            try:
                # Bounded: a renewal stuck behind a blocked database counts as failed.
                renewal = self.db.run(queue.renew, self.worker_id, self.lease)
                held = set(await asyncio.wait_for(renewal, self.lease / 3))
                renewed_at = time.monotonic()
            except Exception as exc:
                log.warning("could not renew the leases of running documents: %s", exc)
                # Only where other processes could take them over (PostgreSQL):
                # an embedded database has no one else, so its work goes on.
                if self.shared and time.monotonic() - renewed_at > self.lease / 2:
                    # Soon anyone may rescue them: stop before that.
                    self._drop(list(self._running), "its lease could not be renewed")
                continue
            # Missed by two renewals in a row: one alone may be a document that
            # ended between the renewal and now. (The fence refuses a lost
            # document's writes meanwhile.)
            missing = {d for d in running if d in self._running and d not in held}
            self._drop(sorted(missing & suspects), "it lost its lease")
            suspects = missing
            try:
                for document in await self.db.write(queue.rescue):
                    log.warning(
                        "document %s: its worker's lease expired; now %s",
                        document.id,
                        document.status,
                    )
            except Exception as exc:
                log.warning("could not rescue documents with expired leases: %s", exc)

    def _drop(self, document_ids: list[str], why: str) -> None:
        for document_id in document_ids:
            task = self._running.get(document_id)
            if task is not None:
                log.warning("document %s: stopping work on it, %s", document_id, why)
                task.cancel()

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
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self._dispatcher:
            # Woken rather than cancelled: a claim it has in flight would be lost.
            self._wake.set()
            self._slot_freed.set()
            await self._dispatcher
        if self._tasks:
            await self._stop_tasks(grace)
        await self._stop_requeuer()  # last: a task stopping may still hand a document back

    async def _stop_tasks(self, grace: float) -> None:
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        cut_short = [doc_id for doc_id, task in self._running.items() if task in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if cut_short:
            await self.db.write(queue.release, cut_short, lease_owner=self.worker_id)
            log.info(
                "put %d document(s) back in the queue; they resume at the next start",
                len(cut_short),
            )

    def _claiming(self) -> bool:
        return not self._stop.is_set()

    async def _dispatch(self) -> None:
        failures = 0
        while not self._stop.is_set():
            free = self.concurrency - len(self._tasks)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                documents = await self.db.write(queue.claim, free, self.worker_id, self.lease)
            except Exception as exc:
                failures += 1
                await self._claim_failed(exc, failures)
                continue
            if failures:
                log.info("claiming from the queue works again")
                failures = 0
            if self._stop.is_set():
                await self._put_back(documents)
                return
            if not documents:
                # Our own claim's commit set the flag. The database runs writes one
                # at a time, so any commit after our claim wakes us after this line.
                self._wake.clear()
                await self._sleep_until_work()
                continue
            for document in documents:
                task = asyncio.create_task(
                    self._work(document), name=f"docintel-worker-{document.id}"
                )
                self._tasks.add(task)
                task.add_done_callback(self._forget)

    async def _claim_failed(self, exc: Exception, failures: int) -> None:
        """Log a failed claim (once per run of failures) and wait before the next."""
        cause = transient_cause(exc)
        if cause is None:
            log.exception("could not claim from the queue; retrying")
        elif failures == 1:
            log.warning(
                "could not claim from the queue (%s: %s); retrying with backoff", cause, exc
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), _backoff(failures))

    async def _sleep_until_work(self) -> None:
        """Until a commit, or until a document waiting out its backoff may be claimed."""
        timeout = IDLE_RECHECK_SECONDS
        with contextlib.suppress(Exception):  # a failed read only shortens nothing
            waiting = await self.db.run(queue.seconds_until_claimable)
            if waiting is not None:
                timeout = min(timeout, waiting + 0.05)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _hand_back(self, document_id: str, cause: str) -> None:
        """Take a document whose status could not be written: requeue it when writes work."""
        self._unwritten[document_id] = cause
        if self._requeuer is None or self._requeuer.done():
            self._requeuer = asyncio.create_task(self._requeue(), name="docintel-requeuer")

    async def _requeue(self) -> None:
        """Put every handed-back document back to `pending`, trying until the write succeeds."""
        failures = 0
        while self._unwritten:
            batch = dict(self._unwritten)
            try:
                requeued = await self.db.write(queue.requeue, batch, self.worker_id)
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.warning(
                        "cannot requeue %d document(s) yet (%s: %s); retrying with backoff",
                        len(batch),
                        transient_cause(exc) or "unexpected error",
                        exc,
                    )
                await asyncio.sleep(_backoff(failures))
                continue
            for document_id in batch:
                self._unwritten.pop(document_id, None)
            if requeued:
                log.warning(
                    "requeued %d document(s) whose status could not be written: %s",
                    len(requeued),
                    ", ".join(requeued),
                )

    async def _stop_requeuer(self) -> None:
        """At stop: one last try; what is still unwritten is requeued at the next start."""
        if self._requeuer is not None:
            self._requeuer.cancel()
            await asyncio.gather(self._requeuer, return_exceptions=True)
        if self._unwritten:
            try:
                await self.db.write(queue.requeue, dict(self._unwritten), self.worker_id)
            except Exception as exc:
                log.warning(
                    "could not requeue %d document(s) at stop (%s); the next start will",
                    len(self._unwritten),
                    exc,
                )

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
            except Unwritable as unwritable:
                # Free the slot; the requeue task puts the document back once it can.
                self._hand_back(unwritable.document_id, unwritable.cause)
                return
            finally:
                del self._running[document.id]
            if claimed is not None and self._stop.is_set():
                await self._put_back([claimed])  # claimed as the server began to stop
                return

    async def _put_back(self, documents: list[Document]) -> None:
        if documents:
            await self.db.write(
                queue.release,
                [d.id for d in documents],
                "claimed as the server stopped",
                self.worker_id,
            )

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()


def _backoff(failures: int) -> float:
    """0.5 s after the first failure, doubling, at most RETRY_MAX_DELAY."""
    return float(min(RETRY_MAX_DELAY, 0.5 * 2 ** (failures - 1)))
