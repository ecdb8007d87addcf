"""The one place that maps errors to HTTP: the status table and the JSON envelope.

Routes and dependencies raise core errors (`DocintelError` subclasses); these
handlers turn them, and the framework's own errors, into
`{"detail": {"code", "message", ...}}` with the right status. Nothing else
builds an error response.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from docintel.core.errors import (
    AmbiguousId,
    BadRequest,
    DocintelError,
    DocumentNotFound,
    FileTooLarge,
    IdTooShort,
    InsufficientStorage,
    InvalidRequest,
    NotAuthenticated,
    RejectedUpload,
    RequestTooLarge,
    TooManyRequests,
    UnsupportedFileType,
    UnsupportedProtocol,
    UploadConflict,
    UploadNotFound,
)

# Core errors that reach the edge, by HTTP status; the first matching class wins.
STATUS_FOR_ERROR: list[tuple[type[DocintelError], int]] = [
    (FileTooLarge, 413),
    (UnsupportedFileType, 415),
    (RejectedUpload, 400),
    (IdTooShort, 400),
    (DocumentNotFound, 404),
    (AmbiguousId, 409),
    (BadRequest, 400),
    (InvalidRequest, 422),
    (RequestTooLarge, 413),
    (NotAuthenticated, 401),
    (TooManyRequests, 429),
    (UploadNotFound, 404),
    (UploadConflict, 409),
    (UnsupportedProtocol, 412),
    (InsufficientStorage, 507),  # the disk, its inodes or the quota are full
]


def status_for(exc: DocintelError) -> int:
    return next((s for cls, s in STATUS_FOR_ERROR if isinstance(exc, cls)), 500)


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
) -> JSONResponse:
    body = {"code": code, "message": message, **(details or {})}
    return JSONResponse({"detail": body}, status, headers=headers)


def headers_for(exc: DocintelError) -> dict[str, str] | None:
    if isinstance(exc, NotAuthenticated):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, TooManyRequests):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, UnsupportedProtocol):
        return {"Tus-Version": "1.0.0"}
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(DocintelError)
    async def docintel_error(request: Request, exc: DocintelError) -> JSONResponse:
        return error_response(status_for(exc), exc.code, exc.message, headers_for(exc), exc.details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The framework's own: unknown routes, wrong methods.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: answer in the spec's error shape. Starlette's
        # ServerErrorMiddleware re-raises after this, so uvicorn logs the trace.
        return error_response(
            500, "internal_error", "An unexpected error occurred; see the server log."
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return error_response(422, "invalid_request", f"The request is not valid: {problems}.")
