"""Request and response models: the API's shapes in the OpenAPI schema."""

from __future__ import annotations

from typing import Literal, cast

from pydantic import BaseModel, Field

from docintel.core.analysis import AnalysisResult
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
    """The `data:` of a stream event (SSE and WebSocket alike).

    The database writes it (`core.events._data_sql`), byte for byte what
    `model_dump_json(exclude_none=True)` of this model writes; a test compares them.
    """

    document_id: str
    status: Status
    timestamp: str
    filename: str
    detail: str | None = None
    error: str | None = None
    analysis: AnalysisResult | None = None
