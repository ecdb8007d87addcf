"""The /documents resource: upload, list, detail, status, delete."""

from __future__ import annotations

import logging
from typing import Annotated, Any, cast

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from docintel.core.analysis import AnalysisResult
from docintel.core.errors import BadRequest, DocintelError, TooManyRequests
from docintel.core.service import MIN_ID_PREFIX
from docintel.server.auth import CurrentUser
from docintel.server.deps import ServiceDep
from docintel.server.errors import status_for
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
from docintel.server.uploads import UploadReceiver, body_limit, too_large

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
    wait = await request.app.state.upload_limiter.hit(user)
    if wait:
        raise TooManyRequests(f"Too many uploads; try again in {wait} s.", wait)
    max_files, max_bytes = settings.max_files_per_upload, settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if (
        declared.isascii()
        and declared.isdigit()
        and int(declared) > body_limit(max_files, max_bytes)
    ):
        raise too_large(max_files, max_bytes)
    receiver = UploadReceiver(service.storage, max_bytes, max_files)
    try:
        await receiver.receive(request)
    except ClientDisconnect:
        # Cut off mid-body: receive() removed what it wrote, nothing was queued,
        # and nobody is left to read an answer.
        log.info("an upload by %s was cut off by the client; nothing kept", user)
        raise BadRequest(
            "The upload ended before its body was complete.", code="upload_cut_off"
        ) from None
    if receiver.refusal is not None:
        return _refused(receiver, receiver.refusal)
    try:
        documents, not_stored = await service.accept_all(user, receiver.received)
    finally:
        receiver.discard()  # whatever was not placed (an error above) is removed
    for filename, problem in not_stored:
        receiver.reject(filename, problem)
    accepted = [DocumentPublic.of(d) for d in documents]
    errors = [_upload_error(r.filename, r.error) for r in receiver.rejected]
    body = UploadResult(documents=accepted, errors=errors).model_dump(mode="json")
    if accepted:
        return JSONResponse(body, status_code=207 if errors else 201)
    if not errors:
        message = "No files were sent: use multipart parts named 'files'."
        body["detail"] = {"code": "no_files", "message": message}
        return JSONResponse(body, status_code=400)
    status_code, first = _status_for_rejections(receiver)
    body["detail"] = {"code": first.code, "message": first.message}
    return JSONResponse(body, status_code=status_code)


def _upload_error(filename: str, error: DocintelError) -> UploadError:
    return UploadError(filename=filename, code=error.code, message=error.message)


def _status_for_rejections(receiver: UploadReceiver) -> tuple[int, DocintelError]:
    """One status for a batch of which nothing was accepted, and the error it is for.

    A full disk wins (507: the same request may succeed later); otherwise the
    common status of the rejections, else 400.
    """
    by_status: dict[int, DocintelError] = {}
    for rejection in receiver.rejected:
        by_status.setdefault(status_for(rejection.error), rejection.error)
    if 507 in by_status:
        return 507, by_status[507]
    if len(by_status) == 1:
        return next(iter(by_status.items()))
    return 400, receiver.rejected[0].error


def _refused(receiver: UploadReceiver, refusal: DocintelError) -> JSONResponse:
    """The answer to an upload refused as a whole: nothing was stored.

    The errors are the files rejected before it (at most one per file allowed)
    and the refusal itself. The rest of the body was not read: `Connection:
    close` ends the connection after the answer, so the server does not go on
    draining what the client still sends.
    """
    errors = [_upload_error(r.filename, r.error) for r in receiver.rejected]
    errors.append(_upload_error(receiver.refused_part, refusal))
    body = UploadResult(documents=[], errors=errors).model_dump(mode="json")
    body["detail"] = {"code": refusal.code, "message": refusal.message}
    return JSONResponse(body, status_code=status_for(refusal), headers={"Connection": "close"})


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
