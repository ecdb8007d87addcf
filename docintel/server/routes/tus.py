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
import os
from email.utils import formatdate
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docintel.core.errors import (
    BadRequest,
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
from docintel.server.auth import CurrentUser
from docintel.server.deps import ServiceDep
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


def _tus_version(tus_resumable: Annotated[str | None, Header()] = None) -> None:
    if tus_resumable != TUS_VERSION:
        raise UnsupportedProtocol()


Store = Annotated[ResumableUploads, Depends(_store)]
TusVersion = Annotated[None, Depends(_tus_version)]


@router.options("/", status_code=204)
@router.options("/{upload_id}", status_code=204)
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


@router.post("/", status_code=201)
async def create(
    request: Request,
    user: CurrentUser,
    store: Store,
    _: TusVersion,
    upload_length: Annotated[str | None, Header()] = None,
    upload_metadata: Annotated[str | None, Header()] = None,
) -> Response:
    """Start a resumable upload: `Upload-Length`, and the file name in `Upload-Metadata`."""
    wait = request.app.state.upload_limiter.hit(user)
    if wait:
        raise TooManyRequests(f"Too many uploads; try again in {wait} s.", wait)
    length = _byte_count("Upload-Length", upload_length)
    metadata = parse_metadata(upload_metadata or "")
    filename = metadata.get("filename") or metadata.get("name")
    if not filename:
        raise BadRequest(
            "Upload-Metadata must name the file: filename <base64 of the name>.",
            code="missing_filename",
        )
    upload = await asyncio.to_thread(store.create, user, filename, length)
    log.info("resumable upload %s started by %s (%d bytes)", upload.id, user, length)
    return Response(
        status_code=201,
        headers={"Location": f"{PREFIX}/{upload.id}", **_expiry(upload)},
    )


@router.head("/{upload_id}")
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


@router.patch("/{upload_id}", response_model=DocumentPublic)
async def append(
    upload_id: str,
    request: Request,
    user: CurrentUser,
    store: Store,
    service: ServiceDep,
    _: TusVersion,
    upload_offset: Annotated[str | None, Header()] = None,
    content_type: Annotated[str | None, Header()] = None,
) -> Response:
    """Send bytes from `Upload-Offset` on; the last ones turn the upload into a document."""
    if (content_type or "").split(";")[0].strip().lower() != OCTET_STREAM:
        raise UnsupportedFileType(
            f"A PATCH carries Content-Type: {OCTET_STREAM}.", code="unsupported_media_type"
        )
    claimed = _byte_count("Upload-Offset", upload_offset)
    upload = await asyncio.to_thread(store.get, user, upload_id)
    with store.appending(upload) as fd:
        position = store.offset(upload)
        if claimed != position:
            raise UploadConflict(
                f"The upload is at byte {position}, not {claimed}: ask for the offset "
                "(HEAD) and go on from there."
            )
        try:
            position = await _receive(request, fd, position, upload.length)
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


@router.delete("/{upload_id}", status_code=204)
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
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
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
    document = await service.accept(upload.owner, received)
    await asyncio.to_thread(store.became, upload, document.id)
    log.info("resumable upload %s became document %s", upload.id, document.id)
    return document


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
