"""Resumable uploads over tus 1.0 at /uploads/ (creation, termination, expiration).

Any tus client (tuspy, tus-js-client, Uppy) can send a file in pieces and, after
a dropped connection, ask where the server is (HEAD) and go on from there. The
upload's bytes live in the core's `ResumableUploads`; when the last byte
arrives, the file goes through the same validation, storage and queue as a
multipart upload (`DocumentService.accept`), and the PATCH that completed it
answers 200 with the document (tus clients take any 2xx; earlier PATCHes
answer 204). A HEAD on a finished upload names its document in
`Docintel-Document-Id`, so a client that lost that answer still finds it.

Not tuspyserver: its router has no notion of an upload's owner (one user
could resume or delete another's upload by its URL), answers errors in its
own shape rather than the API's, and accepts a PATCH at any offset unless told
otherwise; the protocol's core is small enough to keep here, on our storage.
"""

from __future__ import annotations

import asyncio
import logging
from email.utils import formatdate
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docintel.core import validation
from docintel.core.errors import (
    BadRequest,
    InsufficientStorage,
    RejectedUpload,
    RequestTooLarge,
    TooManyRequests,
    UnsupportedFileType,
    UnsupportedProtocol,
    UploadConflict,
)
from docintel.core.models import Document
from docintel.core.resumable import ResumableUploads, Upload, parse_metadata
from docintel.core.service import DocumentService, Received
from docintel.core.storage import Storage, is_out_of_space
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
from docintel.server.schemas import DocumentPublic

log = logging.getLogger(__name__)
router = APIRouter(prefix="/uploads", tags=["uploads"])

PREFIX = "/uploads"
TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,termination,expiration"
OCTET_STREAM = "application/offset+octet-stream"
# For browsers' tus clients on another origin (DOCINTEL_CORS_ORIGINS).
REQUEST_HEADERS = ["Tus-Resumable", "Upload-Length", "Upload-Metadata", "Upload-Offset"]
EXPOSED_HEADERS = [
    "Location",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Expires",
    "Docintel-Document-Id",
]


def _store(request: Request) -> ResumableUploads:
    store: ResumableUploads = request.app.state.resumable
    return store


def _tus_version(request: Request) -> None:
    # Read here, declared by hand below: tus answers a missing or other version
    # with 412, where a FastAPI header parameter would answer 422.
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise UnsupportedProtocol()


Store = Annotated[ResumableUploads, Depends(_store)]
TusVersion = Annotated[None, Depends(_tus_version)]


def _header(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "schema": schema,
        "description": description,
    }


TUS_RESUMABLE = _header(
    "Tus-Resumable", {"type": "string", "enum": [TUS_VERSION]}, "The protocol version (else 412)."
)
BYTES = {"type": "integer", "minimum": 0}
UPLOAD_LENGTH = _header(
    "Upload-Length", {"type": "integer", "minimum": 1}, "The file's size (not empty)."
)
UPLOAD_METADATA = _header(
    "Upload-Metadata",
    {"type": "string", "pattern": "^filename [A-Za-z0-9+/]+={0,2}$"},
    "`filename <base64 of the file name>` (tus clients also send other keys).",
)
UPLOAD_OFFSET = _header("Upload-Offset", BYTES, "Where this body starts: the server's offset.")
OFFSET_HEADERS = {
    "Upload-Offset": {"description": "Bytes received so far.", "schema": BYTES},
}
ON_EVERY_ANSWER = {"Tus-Resumable": {"description": "1.0.0", "schema": {"type": "string"}}}
NOT_FOUND: Responses = {404: error("No such upload of yours (or it expired): `upload_not_found`.")}
WRONG_VERSION: Responses = {
    412: error("Tus-Resumable is missing or not 1.0.0 (`Tus-Version` says which).")
}
BAD_HEADER: Responses = {400: error("A tus header is missing or malformed.")}


CAPABILITIES: Responses = {
    204: {
        "description": "What the server supports.",
        "headers": {
            "Tus-Version": {"description": "1.0.0", "schema": {"type": "string"}},
            "Tus-Extension": {"description": EXTENSIONS, "schema": {"type": "string"}},
            "Tus-Max-Size": {"description": "The upload limit.", "schema": BYTES},
        },
    }
}


@router.options("/", status_code=204, response_class=Response, responses=CAPABILITIES)
async def capabilities(store: Store) -> Response:
    """What this tus server supports (no token needed: it says nothing about anyone)."""
    return Response(
        status_code=204,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": EXTENSIONS,
            "Tus-Max-Size": str(store.max_bytes),
        },
    )


@router.post(
    "/",
    status_code=201,
    response_class=Response,
    responses={
        201: {
            "description": "Created: send the bytes to `Location` with PATCH.",
            "headers": {
                "Location": {"description": "The upload's URL.", "schema": {"type": "string"}},
                **ON_EVERY_ANSWER,
            },
        },
        **BAD_HEADER,
        **AUTH_ERRORS,
        **WRONG_VERSION,
        413: error("Upload-Length is over the upload limit (`file_too_large`)."),
        415: error("Not a .pdf or .txt file name (`unsupported_type`)."),
        **TOO_MANY,
        **INSUFFICIENT_STORAGE,
    },
    openapi_extra={"parameters": [TUS_RESUMABLE, UPLOAD_LENGTH, UPLOAD_METADATA]},
)
async def create(
    request: Request, user: CurrentUser, store: Store, service: ServiceDep, _: TusVersion
) -> Response:
    """Start a resumable upload: `Upload-Length`, and the file name in `Upload-Metadata`."""
    wait = await request.app.state.upload_limiter.hit(user)
    if wait:
        raise TooManyRequests(f"Too many uploads; try again in {wait} s.", wait)
    length = _byte_count("Upload-Length", request.headers.get("upload-length"))
    metadata = parse_metadata(request.headers.get("upload-metadata", ""))
    filename = validation.clean_filename(metadata.get("filename") or metadata.get("name") or "")
    if not filename:
        raise BadRequest(
            "Upload-Metadata must name the file: filename <base64 of the name>.",
            code="missing_filename",
        )
    try:
        upload = await asyncio.to_thread(store.create, user, filename, length)
    except OSError as exc:
        if not is_out_of_space(exc):
            raise
        raise service.storage.full_error(exc, f"{filename!r} was not started") from None
    log.info("resumable upload %s started by %s (%d bytes)", upload.id, user, length)
    return Response(
        status_code=201,
        headers={"Location": f"{PREFIX}/{upload.id}", **_expiry(upload)},
    )


@router.head(
    "/{upload_id}",
    response_class=Response,
    responses={
        200: {
            "description": "Where the upload is (no body).",
            "headers": {
                **OFFSET_HEADERS,
                "Upload-Length": {"description": "The file's size.", "schema": BYTES},
                "Docintel-Document-Id": {
                    "description": "Once complete: the document it became.",
                    "schema": {"type": "string"},
                },
                **ON_EVERY_ANSWER,
            },
        },
        **AUTH_ERRORS,
        **NOT_FOUND,
        **INVALID,
        **WRONG_VERSION,
    },
    openapi_extra={"parameters": [TUS_RESUMABLE]},
)
async def offset(upload_id: str, user: CurrentUser, store: Store, _: TusVersion) -> Response:
    """Where the upload is: `Upload-Offset` of `Upload-Length` bytes received."""
    upload = await asyncio.to_thread(store.get, user, upload_id)
    received = await asyncio.to_thread(store.offset, upload)
    headers = {
        "Upload-Offset": str(received),
        "Upload-Length": str(upload.length),
        "Cache-Control": "no-store",
        **_expiry(upload),
    }
    if upload.document_id is not None:
        headers["Docintel-Document-Id"] = upload.document_id
    return Response(status_code=200, headers=headers)


@router.patch(
    "/{upload_id}",
    response_model=DocumentPublic,
    responses={
        200: {
            "description": "The last bytes arrived: the upload became this document.",
            "headers": {**OFFSET_HEADERS, **ON_EVERY_ANSWER},
        },
        204: {
            "description": "Bytes stored; send more from `Upload-Offset`.",
            "headers": {**OFFSET_HEADERS, **ON_EVERY_ANSWER},
        },
        **BAD_HEADER,
        **AUTH_ERRORS,
        **NOT_FOUND,
        **INVALID,
        409: error("Upload-Offset is not the server's (`offset_mismatch`), or busy."),
        **WRONG_VERSION,
        413: error("The body goes past Upload-Length (`past_upload_length`)."),
        415: error(f"Content-Type is not {OCTET_STREAM}, or the file is not a PDF/text."),
        **INSUFFICIENT_STORAGE,
    },
    openapi_extra={
        "parameters": [TUS_RESUMABLE, UPLOAD_OFFSET],
        "requestBody": {
            "required": True,
            "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        },
    },
)
async def append(
    upload_id: str,
    request: Request,
    user: CurrentUser,
    store: Store,
    service: ServiceDep,
    _: TusVersion,
) -> Response:
    """Send bytes from `Upload-Offset` on; the last ones turn the upload into a document."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != OCTET_STREAM:
        raise UnsupportedFileType(
            f"A PATCH carries Content-Type: {OCTET_STREAM}.", code="unsupported_media_type"
        )
    claimed = _byte_count("Upload-Offset", request.headers.get("upload-offset"))
    upload = await asyncio.to_thread(store.get, user, upload_id)
    if upload.document_id is not None:
        return _already_complete(upload, claimed)
    with store.appending(upload) as fd:
        position = store.offset(upload)
        if claimed != position:
            raise UploadConflict(
                f"The upload is at byte {position}, not {claimed}: ask for the offset "
                "(HEAD) and go on from there."
            )
        try:
            position = await _receive(request, fd, position, upload.length)
        except OSError as exc:
            if not is_out_of_space(exc):
                raise
            # What was written stays: the client resumes from HEAD's offset later.
            raise service.storage.full_error(exc, "The bytes were not all stored") from None
        except ClientDisconnect:
            # What arrived is kept: that is the point. Nobody is left to answer.
            log.info("resumable upload %s: connection dropped at byte %d", upload.id, position)
            return Response(status_code=204)
        if position < upload.length:
            return Response(status_code=204, headers={"Upload-Offset": str(position)})
        document = await _become_document(store, service, upload)
    body = DocumentPublic.of(document).model_dump(mode="json")
    headers = {"Upload-Offset": str(position), "Docintel-Document-Id": document.id}
    return JSONResponse(body, status_code=200, headers=headers)


@router.delete(
    "/{upload_id}",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "Deleted.", "headers": ON_EVERY_ANSWER},
        **AUTH_ERRORS,
        **NOT_FOUND,
        **INVALID,
        **WRONG_VERSION,
    },
    openapi_extra={"parameters": [TUS_RESUMABLE]},
)
async def terminate(upload_id: str, user: CurrentUser, store: Store, _: TusVersion) -> Response:
    """Abandon an upload and free its space (the document it became, if any, stays)."""
    upload = await asyncio.to_thread(store.get, user, upload_id)
    await asyncio.to_thread(store.delete, upload)
    return Response(status_code=204)


async def _receive(request: Request, fd: int, position: int, length: int) -> int:
    """Appends the body to the upload's file; returns the new offset."""
    async for chunk in request.stream():
        if position + len(chunk) > length:
            raise RequestTooLarge(
                f"The body goes past the upload's length ({length} bytes).",
                code="past_upload_length",
            )
        # Counted only once written: a failed write (a full disk) leaves the
        # offset at what the file holds.
        Storage.write_all(fd, chunk)
        position += len(chunk)
    return position


async def _become_document(
    store: ResumableUploads, service: DocumentService, upload: Upload
) -> Document:
    """The same checks, storage and queue as a multipart upload."""
    try:
        finished = await asyncio.to_thread(store.finish, upload)
    except RejectedUpload:
        await asyncio.to_thread(store.delete, upload)  # its bytes are of no use now
        raise
    received = Received(
        filename=upload.filename,
        path=finished.path,
        size_bytes=finished.size_bytes,
        content_type=finished.content_type,
        sha256=finished.sha256,
    )
    try:
        document = await service.accept(upload.owner, received)
    except InsufficientStorage:
        # accept() removed the file it could not queue: nothing is left to resume.
        await asyncio.to_thread(store.delete, upload)
        raise
    await asyncio.to_thread(store.became, upload, document.id)
    log.info("resumable upload %s became document %s", upload.id, document.id)
    return document


def _already_complete(upload: Upload, claimed: int) -> Response:
    """A PATCH after the upload became a document: a client that lost the last answer.

    At the end (an empty PATCH from a client resuming), it is told where things
    stand; anywhere else its offset is wrong.
    """
    if claimed != upload.length:
        raise UploadConflict(
            f"The upload is complete ({upload.length} bytes); it is document {upload.document_id}.",
            code="upload_complete",
        )
    assert upload.document_id is not None
    headers = {"Upload-Offset": str(upload.length), "Docintel-Document-Id": upload.document_id}
    return Response(status_code=204, headers=headers)


def _byte_count(name: str, raw: str | None) -> int:
    value = (raw or "").strip()
    if not (value.isascii() and value.isdigit()):
        raise BadRequest(f"{name} must be a number of bytes.", code="invalid_header")
    return int(value)


def _expiry(upload: Upload) -> dict[str, str]:
    return {"Upload-Expires": formatdate(upload.expires_at, usegmt=True)}


async def sweep_periodically(store: ResumableUploads, every: float) -> None:
    """Removes expired uploads now and then (also at start); runs until cancelled."""
    while True:
        for upload_id in await asyncio.to_thread(store.sweep):
            log.info("removed expired resumable upload %s", upload_id)
        await asyncio.sleep(every)


class TusResumableHeader:
    """Every answer under /uploads/, errors included, says which tus it speaks."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"tus-resumable", TUS_VERSION.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_header)
