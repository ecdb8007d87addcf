"""The one place that maps errors to HTTP: the status table and the JSON envelope.

Routes and dependencies raise core errors (`DocintelError` subclasses); these
handlers turn them, and the framework's own errors, into
`{"detail": {"code", "message", ...}}` with the right status. Nothing else
builds an error response.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

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
    transient_cause,
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


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """The methods a 405's `Allow` header names: those the API serves at the request's path.

    Starlette's 405 names the methods of the first route matching the path
    only: GET and DELETE /documents/{id} are two routes, so it said `GET`.
    A path in the published schema gets the methods declared for it, matched
    by OpenAPI's rule (a concrete path before a templated one, so
    /documents/upload is POST only, not also /documents/{id}'s GET and DELETE);
    any other path, those its routes answer (mounted apps, which take any
    method, aside).
    """
    root = request.scope.get("root_path", "")
    path = request.scope["path"].removeprefix(root) if root else request.scope["path"]
    declared = _declared_methods(request.app, path)
    if declared:
        return ", ".join(declared)
    routes = [r for r in request.app.router.routes if not isinstance(r, Mount)]
    allowed = [
        method
        for method in HTTP_METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]
    return ", ".join(allowed)


def _declared_methods(app: FastAPI, path: str) -> list[str]:
    paths: dict[str, dict[str, Any]] = app.openapi().get("paths", {})
    templated = sorted(paths, key=lambda p: "{" in p)  # concrete paths first
    for template in templated:
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return sorted(m.upper() for m in paths[template] if m.upper() in HTTP_METHODS)
    return []


def install(app: FastAPI) -> None:
    @app.exception_handler(DocintelError)
    async def docintel_error(request: Request, exc: DocintelError) -> JSONResponse:
        return error_response(status_for(exc), exc.code, exc.message, headers_for(exc), exc.details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The framework's own: unknown routes, wrong methods.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request) or headers.get("Allow", "")
        return error_response(exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        cause = transient_cause(exc)
        if cause is not None:
            # A passing shortage (the database restarting, a full disk): not the
            # request's fault, and worth another try.
            return error_response(
                503,
                "temporarily_unavailable",
                f"The server cannot answer right now ({cause}); try again shortly.",
                {"Retry-After": "1"},
            )
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
