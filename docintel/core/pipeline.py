"""One document through its stages, each transition written to the event log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from docintel.core import queue
from docintel.core.analysis import AnalysisResult, Analyzer
from docintel.core.config import Settings
from docintel.core.db import Database
from docintel.core.errors import DocintelError
from docintel.core.extraction import Limits, extract
from docintel.core.models import ANALYZING, COMPLETED, FAILED, PROCESSING, Document
from docintel.core.storage import Storage
from docintel.core.validation import SNIFF_BYTES, validate

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, db: Database, storage: Storage, analyzer: Analyzer, limits: Limits) -> None:
        self.db = db
        self.storage = storage
        self.analyzer = analyzer
        self.limits = limits

    async def run(
        self, document: Document, *, claim_next: Callable[[], bool] = lambda: False
    ) -> Document | None:
        """Process a claimed (`processing`) document to `completed` or `failed`.

        If the document is deleted meanwhile, a transition finds it gone and
        the result is dropped. When `claim_next()` says so at the end, the
        last write also claims the next pending document, returned (already
        `processing`) for the caller to run: one database round trip between
        two documents instead of two.
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
        except DocintelError as exc:
            log.info("document %s failed while %s: %s", document.id, stage, exc.code)
            return await self._finish(document.id, stage, FAILED, claim_next, error=exc.message)
        except Exception as exc:
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

    async def _move(self, document_id: str, current: str, status: str, **kwargs: object) -> bool:
        moved = await self.db.write(queue.transition, document_id, (current,), status, **kwargs)
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
        write = asyncio.ensure_future(
            self.db.write(queue.transition_then_claim, document_id, (current,), status, **kwargs)
        )
        try:
            moved, claimed = await asyncio.shield(write)
        except asyncio.CancelledError:
            # The write goes on in the database thread whatever happens here; a
            # document it claims must not stay `processing` with nobody working on it.
            moved, claimed = await write
            if claimed is not None:
                await self.db.write(queue.release, [claimed.id], "its worker was stopped")
            raise
        if not moved:
            _dropped(document_id, status)
        return claimed


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
