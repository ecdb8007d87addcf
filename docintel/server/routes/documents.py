"""The /documents resource: upload, list, detail, status, delete."""

from __future__ import annotations

import logging
from typing import Annotated, Any, cast

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from docintel.core.analysis import AnalysisResult
from docintel.core.errors import (
    BadRequest,
    FileTooLarge,
    RequestTooLarge,
    TooManyRequests,
    UnsupportedFileType,
)
from docintel.core.service import MIN_ID_PREFIX
from docintel.core.validation import format_bytes
from docintel.server.auth import CurrentUser
from docintel.server.deps import ServiceDep
from docintel.server.openapi import (
    AUTH_ERRORS,
    INSUFFICIENT_STORAGE,
    INVALID,
    TOO_MANY,
    Responses,
    error,
)
from docintel.server.schemas import (
    AmbiguousIdResponse,
    DocumentDetailPublic,
    DocumentPublic,
    DocumentsPublic,
    DocumentStatus,
    ErrorResponse,
    HistoryEntry,
    Status,
    UploadError,
    UploadRejected,
    UploadResult,
)
from docintel.server.uploads import UploadReceiver

log = logging.getLogger(__name__)
LAST_EVENT_ID = "X-Last-Event-ID"  # the event a listing reflects
# Every route here needs a token.
router = APIRouter(prefix="/documents", tags=["documents"], responses=AUTH_ERRORS)
# A route taking an id takes a unique prefix of it too (at least 4 characters).
ID_ERRORS: Responses = {
    **INVALID,
    400: error("The id prefix is too short (`id_too_short`)."),
    404: error("No document of yours has this id (`not_found`)."),
    409: {"model": AmbiguousIdResponse, "description": "The id prefix is ambiguous."},
}
DocumentId = Annotated[
    str,
    Path(
        description="A document id, or a unique prefix of it (at least 4 characters).",
        # In the schema only: a shorter id is answered 400 `id_too_short` with
        # a sentence, not FastAPI's 422, so the check stays in the service.
        json_schema_extra={"minLength": MIN_ID_PREFIX},
    ),
]
# Multipart framing per part is a few hundred bytes; allow generously for it.
ENVELOPE_BYTES = 1024 * 1024

_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["files"],
                "properties": {
                    # At least one: an upload without files is answered 400 `no_files`.
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "minItems": 1,
                    }
                },
            }
        }
    },
}


# When no file is accepted, the answer lists each file's error (UploadRejected);
# an upload refused as a whole (not multipart, too large, too many parts) has
# only the `detail` (ErrorResponse).
_REJECTED: dict[str, Any] = {"model": UploadRejected | ErrorResponse}
UPLOAD_RESPONSES: Responses = {
    207: {"model": UploadResult, "description": "Some files were accepted, some refused."},
    400: {**_REJECTED, "description": "Nothing was accepted: an empty, unreadable or bad upload."},
    413: {**_REJECTED, "description": "Nothing was accepted: too large (a file, or the body)."},
    415: {**_REJECTED, "description": "Nothing was accepted: no file was a PDF or text file."},
    **TOO_MANY,
    **INSUFFICIENT_STORAGE,
}


@router.post(
    "/upload",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadResult,
    responses=UPLOAD_RESPONSES,
    openapi_extra={"requestBody": _UPLOAD_BODY},
)
async def upload(request: Request, user: CurrentUser, service: ServiceDep) -> JSONResponse:
    """Upload PDF and TXT files (multipart, parts named `files`)."""
    settings = service.settings
    wait = request.app.state.upload_limiter.hit(user)
    if wait:
        raise TooManyRequests(f"Too many uploads; try again in {wait} s.", wait)
    declared = request.headers.get("content-length", "")
    most = settings.max_files_per_upload * settings.max_upload_bytes + ENVELOPE_BYTES
    if declared.isascii() and declared.isdigit() and int(declared) > most:
        raise RequestTooLarge(
            f"The upload is larger than {settings.max_files_per_upload} files of "
            f"{format_bytes(settings.max_upload_bytes)} each."
        )
    receiver = UploadReceiver(
        service.storage, settings.max_upload_bytes, settings.max_files_per_upload
    )
    try:
        await receiver.receive(request)
    except ClientDisconnect:
        # Cut off mid-body: receive() removed what it wrote, nothing was queued,
        # and nobody is left to read an answer.
        log.info("an upload by %s was cut off by the client; nothing kept", user)
        raise BadRequest(
            "The upload ended before its body was complete.", code="upload_cut_off"
        ) from None
    accepted = []
    try:
        for received in receiver.received:
            accepted.append(DocumentPublic.of(await service.accept(user, received)))
    finally:
        receiver.discard()  # whatever was not placed (an error above) is removed
    errors = [
        UploadError(filename=r.filename, code=r.error.code, message=r.error.message)
        for r in receiver.rejected
    ]
    body = UploadResult(documents=accepted, errors=errors).model_dump(mode="json")
    if accepted:
        return JSONResponse(body, status_code=207 if errors else 201)
    if not errors:
        message = "No files were sent: use multipart parts named 'files'."
        body["detail"] = {"code": "no_files", "message": message}
        return JSONResponse(body, status_code=400)
    body["detail"] = {"code": errors[0].code, "message": errors[0].message}
    return JSONResponse(body, status_code=_status_for_rejections(receiver))


def _status_for_rejections(receiver: UploadReceiver) -> int:
    """One status for a batch of which nothing was accepted: the common one, else 400."""
    statuses = set()
    for rejection in receiver.rejected:
        if isinstance(rejection.error, FileTooLarge):
            statuses.add(413)
        elif isinstance(rejection.error, UnsupportedFileType):
            statuses.add(415)
        else:
            statuses.add(400)
    return statuses.pop() if len(statuses) == 1 else 400


@router.get("", response_model=DocumentsPublic, responses=INVALID)
async def list_documents(
    response: Response,
    user: CurrentUser,
    service: ServiceDep,
    status_: Annotated[list[Status], Query(alias="status")] = [],  # noqa: B006 (FastAPI copies it)
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> DocumentsPublic:
    """List your documents, newest first.

    `last_event_id` (also the `X-Last-Event-ID` header) is the event the list
    reflects: stream from it to get exactly what changed after.
    """
    page = await service.list(user, status_, limit, offset)
    items, total = page.value
    response.headers[LAST_EVENT_ID] = str(page.last_event_id)
    return DocumentsPublic(
        items=[DocumentPublic.of(d) for d in items],
        total=total,
        limit=limit,
        offset=offset,
        last_event_id=page.last_event_id,
    )


@router.get("/{document_id}", response_model=DocumentDetailPublic, responses=ID_ERRORS)
async def get_document(
    document_id: DocumentId, user: CurrentUser, service: ServiceDep, response: Response
) -> DocumentDetailPublic:
    """One document with its status history and analysis (`X-Last-Event-ID`: as of which event)."""
    snapshot = await service.get(user, document_id)
    detail = snapshot.value
    response.headers[LAST_EVENT_ID] = str(snapshot.last_event_id)
    return DocumentDetailPublic(
        **DocumentPublic.of(detail.document).model_dump(),
        history=[HistoryEntry.of(e) for e in detail.history],
        analysis=AnalysisResult.model_validate(detail.analysis) if detail.analysis else None,
    )


@router.get("/{document_id}/status", response_model=DocumentStatus, responses=ID_ERRORS)
async def get_status(
    document_id: DocumentId, user: CurrentUser, service: ServiceDep
) -> DocumentStatus:
    """A document's current status."""
    d = await service.status(user, document_id)
    return DocumentStatus(
        id=d.id, status=cast(Status, d.status), updated_at=d.updated_at, error=d.error
    )


@router.delete("/{document_id}", status_code=204, responses={**ID_ERRORS, **INSUFFICIENT_STORAGE})
async def delete_document(
    document_id: DocumentId, user: CurrentUser, service: ServiceDep
) -> Response:
    """Delete a document, its file and its history, in any status."""
    await service.delete(user, document_id)
    return Response(status_code=204)
