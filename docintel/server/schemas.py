"""Request and response models: the API's shapes in the OpenAPI schema."""

from __future__ import annotations

import collections
import json
import json.encoder
from typing import Literal, cast

from pydantic import BaseModel, Field

from docintel.core.analysis import AnalysisResult
from docintel.core.events import Event
from docintel.core.models import Document, StatusEvent

Status = Literal["pending", "processing", "analyzing", "completed", "failed"]


class LoginRequest(BaseModel):
    username: str
    password: str


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    detail: ErrorBody


class Candidate(BaseModel):
    id: str
    filename: str
    status: Status


class AmbiguousIdBody(ErrorBody):
    candidates: list[Candidate]


class AmbiguousIdResponse(BaseModel):
    """409: the id prefix matches several documents; `candidates` lists some."""

    detail: AmbiguousIdBody


class DocumentPublic(BaseModel):
    id: str
    filename: str
    size_bytes: int
    content_type: str
    sha256: str
    status: Status
    created_at: str
    updated_at: str
    error: str | None

    @classmethod
    def of(cls, d: Document) -> DocumentPublic:
        return cls(
            id=d.id,
            filename=d.filename,
            size_bytes=d.size_bytes,
            content_type=d.content_type,
            sha256=d.sha256,
            status=cast(Status, d.status),
            created_at=d.created_at,
            updated_at=d.updated_at,
            error=d.error,
        )


class HistoryEntry(BaseModel):
    status: Status
    at: str
    detail: str | None

    @classmethod
    def of(cls, e: StatusEvent) -> HistoryEntry:
        return cls(status=cast(Status, e.status), at=e.at, detail=e.detail)


class DocumentDetailPublic(DocumentPublic):
    history: list[HistoryEntry]
    analysis: AnalysisResult | None


class DocumentsPublic(BaseModel):
    items: list[DocumentPublic]
    total: int
    limit: int
    offset: int
    last_event_id: int = Field(
        description="The event this list reflects: stream after it to miss nothing."
    )


class DocumentStatus(BaseModel):
    id: str
    status: Status
    updated_at: str
    error: str | None


class UploadError(BaseModel):
    filename: str
    code: str
    message: str


class UploadResult(BaseModel):
    documents: list[DocumentPublic]
    errors: list[UploadError]


class UploadRejected(UploadResult):
    """No file of the upload was accepted: why, per file, and the first reason as `detail`."""

    detail: ErrorBody


class StreamEvent(BaseModel):
    """The `data:` of a stream event (SSE and WebSocket alike)."""

    document_id: str
    status: Status
    timestamp: str
    filename: str
    detail: str | None = None
    error: str | None = None
    analysis: AnalysisResult | None = None

    @classmethod
    def of(cls, e: Event) -> StreamEvent:
        return cls(
            document_id=e.document_id,
            status=cast(Status, e.status),
            timestamp=e.at,
            filename=e.filename,
            detail=e.detail or None,
            error=e.error or None,
            analysis=AnalysisResult.model_validate(e.analysis) if e.analysis else None,
        )


def encode_stream_event(e: Event) -> str:
    """`StreamEvent.of(e).model_dump_json(exclude_none=True)`, without building the model.

    A replay encodes every event of the log it sends (100k for a large one).
    Building a StreamEvent and an AnalysisResult per event was the encoder's
    whole cost, and json.dumps of a dict still ~4 us (it sets up an encoder on
    every call). The events come from our own log, written by queue.py through
    the same models, so there is nothing to validate: this writes the same
    JSON (same keys, order, separators; strings escaped by the function
    json.dumps(ensure_ascii=False) uses), which a test compares with pydantic's.
    """
    parts = [
        '{"document_id":',
        _string(e.document_id),
        ',"status":',
        _string(e.status),
        ',"timestamp":',
        _string(e.at),
        ',"filename":',
        _string(e.filename),
    ]
    if e.detail:
        parts += (',"detail":', _string(e.detail))
    if e.error:
        parts += (',"error":', _string(e.error))
    if e.analysis:
        a = e.analysis
        parts += (
            ',"analysis":{"summary":',
            _string(a["summary"]),
            ',"key_topics":[',
            ",".join(map(_string, a["key_topics"])),
            '],"sentiment":',
            _string(a["sentiment"]),
            ',"action_items":[',
            ",".join(map(_string, a["action_items"])),
            '],"analyzer":',
            _string(a["analyzer"]),
            ',"model":',
            _string(a["model"]),
            "}",
        )
    parts.append("}")
    return "".join(parts)


_string = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept as is


class EventEncoder:
    """Encodes each event once, however many streams send it (by id, recent ones kept)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._encoded: collections.OrderedDict[int, str] = collections.OrderedDict()

    def __call__(self, event: Event) -> str:
        encoded = self._encoded.get(event.id)
        if encoded is None:
            encoded = encode_stream_event(event)
            self._encoded[event.id] = encoded
            if len(self._encoded) > self.size:
                self._encoded.popitem(last=False)
        return encoded
