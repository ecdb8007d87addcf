"""One document through its stages, each transition written to the event log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from docintel.core import queue
from docintel.core.analysis import AnalysisResult, Analyzer
from docintel.core.config import Settings
from docintel.core.db import Database
from docintel.core.errors import DocintelError, transient_cause
from docintel.core.extraction import Limits, extract
from docintel.core.models import ANALYZING, COMPLETED, FAILED, PROCESSING, Document
from docintel.core.storage import Storage
from docintel.core.validation import SNIFF_BYTES, validate

log = logging.getLogger(__name__)


# A status write that fails for a passing cause (full disk, busy database) is
# retried after 0.1 s, 0.2 s… at most this far apart, within the pipeline's
# `write_retry` budget.
WRITE_RETRY_MAX_DELAY = 5.0

T = TypeVar("T")


class Unwritable(Exception):
    """A document's status could not be written within the retry budget.

    Raised out of `Pipeline.run` for the worker pool, which hands the document
    to its requeue task (`WorkerPool`) and frees the slot.
    """

    def __init__(self, document_id: str, cause: str) -> None:
        super().__init__(f"the status of document {document_id} could not be written: {cause}")
        self.document_id = document_id
        self.cause = cause


class Pipeline:
    def __init__(
        self,
        db: Database,
        storage: Storage,
        analyzer: Analyzer,
        limits: Limits,
        *,
        write_retry: float = 30.0,
    ) -> None:
        self.db = db
        self.storage = storage
        self.analyzer = analyzer
        self.limits = limits
        self.write_retry = write_retry  # seconds a failing status write is retried
        # Set by the worker pool: the lease its claims carry, and which its
        # moves must still hold (a fence against a worker that lost it).
        self.lease_owner: str | None = None
        self.lease = queue.LEASE_SECONDS

    async def run(
        self, document: Document, *, claim_next: Callable[[], bool] = lambda: False
    ) -> Document | None:
        """Process a claimed (`processing`) document to `completed` or `failed`.

        If the document is deleted meanwhile, a transition finds it gone and
        the result is dropped. When `claim_next()` says so at the end, the
        last write also claims the next pending document, returned (already
        `processing`) for the caller to run: one database round trip between
        two documents instead of two.

        A passing shortage (a full disk, no file descriptors left, a busy
        database; `transient_cause`) puts the document back in the queue
        instead of failing it. A status write that fails for such a cause is
        retried for `write_retry` seconds; after that `Unwritable` is raised
        and the caller must see the document requeued once writes succeed again.
        """
        stage = PROCESSING
        analysis: asyncio.Task[AnalysisResult] | None = None
        try:
            path = self.storage.path_for(document.id, document.stored_name)
            extracted = await extract(path, document.content_type, self.limits)
            # The model starts on the text while `analyzing` is committed: neither
            # waits for the other, so the write adds no round trip to the
            # document's time. Nothing of the analysis is kept unless it committed.
            analysis = asyncio.create_task(
                self.analyzer.analyze(extracted.text, filename=document.filename),
                name=f"docintel-analyze-{document.id}",
            )
            if not await self._move(document.id, stage, ANALYZING, detail=extracted.describe()):
                return None
            stage = ANALYZING
            result = await analysis
            return await self._finish(
                document.id,
                stage,
                COMPLETED,
                claim_next,
                detail=f"analysed by {result.analyzer} ({result.model})",
                analysis=result.model_dump(),
            )
        except Unwritable:
            raise
        except Exception as exc:
            cause = transient_cause(exc)
            if cause is not None:
                # The machine, not the document: try it again once the shortage passes.
                log.warning(
                    "document %s: %s while %s (%s); requeueing it",
                    document.id,
                    cause,
                    stage,
                    _brief(exc),
                )
                await self._write(
                    document.id, queue.requeue, {document.id: cause}, self.lease_owner
                )
                return None
            if isinstance(exc, DocintelError):
                log.info("document %s failed while %s: %s", document.id, stage, exc.code)
                return await self._finish(document.id, stage, FAILED, claim_next, error=exc.message)
            # Log and continue: one bad document must not take the worker down.
            log.exception("document %s: unexpected error while %s", document.id, stage)
            return await self._finish(
                document.id,
                stage,
                FAILED,
                claim_next,
                error=f"Internal error while {stage} ({type(exc).__name__}); see the server log.",
            )
        finally:
            if analysis is not None and not analysis.done():
                # Cancelled (document deleted, server stopping), dropped, or the
                # write failed: the analysis must not run on alone.
                analysis.cancel()
                await asyncio.gather(analysis, return_exceptions=True)
            elif analysis is not None and not analysis.cancelled():
                analysis.exception()  # seen: the failure of a dropped document's analysis

    async def _write(self, document_id: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A status write of `document_id`, retried with backoff while it fails for a passing cause.

        Each write is a compare-and-set (`queue.transition`, `queue.requeue`),
        so trying one again after a failure can never apply it twice.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.write_retry
        delay = 0.1
        failures = 0
        while True:
            try:
                result = await self._write_once(fn, *args, **kwargs)
            except Exception as exc:
                cause = transient_cause(exc)
                if cause is None:
                    raise
                failures += 1
                if failures == 1:  # once per document, not once per try
                    log.warning(
                        "document %s: its status could not be written (%s: %s); "
                        "retrying for up to %g s",
                        document_id,
                        cause,
                        _brief(exc),
                        self.write_retry,
                    )
                if loop.time() + delay > deadline:
                    log.warning(
                        "document %s: gave up writing its status after %d tries (%s); "
                        "it goes back to the queue once writes succeed",
                        document_id,
                        failures,
                        cause,
                    )
                    raise Unwritable(document_id, cause) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, WRITE_RETRY_MAX_DELAY)
                continue
            if failures:
                log.info("document %s: status written after %d failed tries", document_id, failures)
            return result

    async def _write_once(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One write that runs to its end in the database thread even if we are cancelled."""
        write = asyncio.ensure_future(self.db.write(fn, *args, **kwargs))
        try:
            return await asyncio.shield(write)
        except asyncio.CancelledError:
            # The write goes on in the database thread whatever happens here; a
            # document it claims must not stay `processing` with nobody working on it.
            with contextlib.suppress(Exception):
                result = await write
                if isinstance(result, tuple) and isinstance(result[-1], Document):
                    await self.db.write(
                        queue.release, [result[-1].id], "its worker was stopped", self.lease_owner
                    )
            raise

    async def _move(self, document_id: str, current: str, status: str, **kwargs: object) -> bool:
        moved = await self._write(
            document_id,
            queue.transition,
            document_id,
            (current,),
            status,
            lease_owner=self.lease_owner,
            **kwargs,
        )
        if not moved:
            _dropped(document_id, status)
        return moved

    async def _finish(
        self,
        document_id: str,
        current: str,
        status: str,
        claim_next: Callable[[], bool],
        **kwargs: object,
    ) -> Document | None:
        """The document's last move; with `claim_next()`, the claim of the next one too."""
        if not claim_next():
            await self._move(document_id, current, status, **kwargs)
            return None
        moved, claimed = await self._write(
            document_id,
            queue.transition_then_claim,
            document_id,
            (current,),
            status,
            lease_owner=self.lease_owner,
            lease=self.lease,
            **kwargs,
        )
        if not moved:
            _dropped(document_id, status)
        return claimed


def _brief(exc: BaseException) -> str:
    """`OSError: [Errno 28] No space left on device`: the log line, no traceback."""
    return f"{type(exc).__name__}: {exc}"


def _dropped(document_id: str, status: str) -> None:
    log.info("document %s is gone or moved on; dropping its %s result", document_id, status)


async def analyze_file(path: Path, analyzer: Analyzer, settings: Settings) -> AnalysisResult:
    """Validate, extract and analyse one local file with no database (`docintel analyze`).

    Raises a DocintelError subclass (RejectedUpload, ExtractionFailed, AnalysisFailed).
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    content_type = validate(path.name, size, head, settings.max_upload_bytes)
    extracted = await extract(path, content_type, limits_for(settings))
    return await analyzer.analyze(extracted.text, filename=path.name)


def limits_for(settings: Settings) -> Limits:
    return Limits(
        timeout=settings.extract_timeout,
        memory_mb=settings.extract_memory_mb,
        max_pages=settings.max_pages,
        max_chars=settings.max_text_chars,
    )
