"""POST /auth/login and POST /auth/refresh."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.formparsers import MultiPartException, MultiPartParser

from docintel.core.errors import InvalidRequest, RequestTooLarge
from docintel.server.auth import Authenticator, CurrentUser
from docintel.server.openapi import AUTH_ERRORS, TOO_MANY, Responses, error
from docintel.server.schemas import LoginRequest, Token

router = APIRouter(prefix="/auth", tags=["auth"])

# A login is a username and a password: a few hundred bytes. Bodies are read into
# memory up to this and no further (see _read_small_body).
LOGIN_BODY_LIMIT = 8 * 1024

_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": LoginRequest.model_json_schema()},
        "application/x-www-form-urlencoded": {"schema": LoginRequest.model_json_schema()},
    },
}


LOGIN_RESPONSES: Responses = {
    401: error("Wrong username or password (`invalid_credentials`)."),
    413: error("The login body is larger than a login needs (`login_too_large`)."),
    422: error("No username and password in the body (`invalid_request`)."),
    **TOO_MANY,
}


@router.post(
    "/login",
    response_model=Token,
    responses=LOGIN_RESPONSES,
    openapi_extra={"requestBody": _BODY},
)
async def login(request: Request) -> Token:
    """Exchange a username and password (JSON or OAuth2 form) for a bearer token."""
    authenticator: Authenticator = request.app.state.authenticator
    address = request.client.host if request.client else "unknown"
    await authenticator.check_address(address)  # a limited address is refused unread
    try:
        credentials = await _read_credentials(request)
    except (InvalidRequest, RequestTooLarge):
        await authenticator.count_malformed(address)
        raise
    token = await authenticator.login(credentials.username, credentials.password, address)
    return Token(access_token=token, expires_in=authenticator.ttl)


@router.post("/refresh", response_model=Token, responses=AUTH_ERRORS)
async def refresh(request: Request, username: CurrentUser) -> Token:
    """Exchange a valid, unexpired bearer token for a fresh one with a full lifetime."""
    authenticator: Authenticator = request.app.state.authenticator
    return Token(access_token=authenticator.issue(username), expires_in=authenticator.ttl)


async def _read_credentials(request: Request) -> LoginRequest:
    body = await _read_small_body(request)
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    try:
        if media_type == "application/json":
            return LoginRequest.model_validate_json(body)
        if media_type == "application/x-www-form-urlencoded":
            return _from_fields(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=20))
        if media_type == "multipart/form-data":
            # From memory: the body is small, and a file part (max_files=0) is refused.
            parser = MultiPartParser(request.headers, _once(body), max_files=0, max_fields=20)
            return _from_fields((await parser.parse()).multi_items())
    except (ValidationError, ValueError, MultiPartException):
        pass  # (UnicodeDecodeError is a ValueError)
    raise InvalidRequest("Send a username and password, as JSON or as a form.")


async def _read_small_body(request: Request) -> bytes:
    """The body, or 413 as soon as it is known to exceed LOGIN_BODY_LIMIT.

    A login is never more than a few hundred bytes, and anyone may send one:
    refuse a large Content-Length before reading anything, and count the bytes
    of a chunked body as they come, so neither memory nor the temp dir grows.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > LOGIN_BODY_LIMIT:
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > LOGIN_BODY_LIMIT:
            raise _too_large()
    return bytes(body)


def _too_large() -> RequestTooLarge:
    return RequestTooLarge(
        f"A login is at most {LOGIN_BODY_LIMIT // 1024} KB: send only a username and password.",
        code="login_too_large",
    )


def _from_fields(fields: Iterable[tuple[str, object]]) -> LoginRequest:
    """username and password from form fields (an OAuth2 form also has grant_type, scope…)."""
    values = dict(fields)
    return LoginRequest.model_validate(
        {"username": values.get("username"), "password": values.get("password")}
    )


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body
