"""The error answers each route declares in the OpenAPI schema, shared by the routes.

Every error the server sends is `{"detail": {"code", "message", ...}}`, built
in one place (`errors.py`); these declarations say so in the schema, status by
status, so that a client generated from it (or schemathesis checking the live
server against it) sees exactly what is sent. The statuses come from
`errors.STATUS_FOR_ERROR` and what each route can raise.

FastAPI declares its own `HTTPValidationError` body for 422 on any route with
parameters, unless the route declares a 422 itself: `INVALID` is that
declaration, since our handler answers a validation error in the envelope.
"""

from __future__ import annotations

from typing import Any

from docintel.server.schemas import ErrorResponse

Responses = dict[int | str, dict[str, Any]]

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}
WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "`Bearer`: the scheme to authenticate with.",
        "required": True,
        "schema": {"type": "string"},
    }
}


def error(description: str, **extra: Any) -> dict[str, Any]:
    """One error status, answered with the envelope (`ErrorResponse`)."""
    return {"model": ErrorResponse, "description": description, **extra}


def json_error(description: str, schema: str = "ErrorResponse", **extra: Any) -> dict[str, Any]:
    """`error()` for a route whose own responses are not JSON (the event stream).

    FastAPI gives a declared `model` the route's media type, which would
    announce the stream's errors as `text/event-stream`; they are JSON. The
    component is there because the JSON routes declare it by model.
    """
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    return {"description": description, "content": content, **extra}


UNAUTHORIZED = "No bearer token, or one that is not valid or has expired (`WWW-Authenticate`)."
NOT_VALID = "A parameter or the body is not valid (`invalid_request`)."
RATE_LIMITED = "Too many requests: try again after `Retry-After` seconds."
DISK_FULL = "The server's disk, or its inodes, ran out: try again once space is freed."

# Every route behind a bearer token (the CurrentUser and StreamSession dependencies).
AUTH_ERRORS: Responses = {401: error(UNAUTHORIZED, headers=WWW_AUTHENTICATE)}
INVALID: Responses = {422: error(NOT_VALID)}
TOO_MANY: Responses = {429: error(RATE_LIMITED, headers=RETRY_AFTER)}
INSUFFICIENT_STORAGE: Responses = {507: error(DISK_FULL)}
