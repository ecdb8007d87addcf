"""POST /auth/login and POST /auth/refresh."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import ValidationError

from docintel.core.errors import InvalidRequest
from docintel.server.auth import Authenticator, CurrentUser
from docintel.server.openapi import AUTH_ERRORS, TOO_MANY, Responses, error
from docintel.server.schemas import LoginRequest, Token

router = APIRouter(prefix="/auth", tags=["auth"])

_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": LoginRequest.model_json_schema()},
        "application/x-www-form-urlencoded": {"schema": LoginRequest.model_json_schema()},
    },
}


LOGIN_RESPONSES: Responses = {
    401: error("Wrong username or password (`invalid_credentials`)."),
    413: error("The login body is larger than a login needs (`request_too_large`)."),
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
    credentials = await _read_credentials(request)
    authenticator: Authenticator = request.app.state.authenticator
    address = request.client.host if request.client else "unknown"
    token = authenticator.login(credentials.username, credentials.password, address)
    return Token(access_token=token, expires_in=authenticator.ttl)


@router.post("/refresh", response_model=Token, responses=AUTH_ERRORS)
async def refresh(request: Request, username: CurrentUser) -> Token:
    """Exchange a valid, unexpired bearer token for a fresh one with a full lifetime."""
    authenticator: Authenticator = request.app.state.authenticator
    return Token(access_token=authenticator.issue(username), expires_in=authenticator.ttl)


async def _read_credentials(request: Request) -> LoginRequest:
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("application/json"):
            return LoginRequest.model_validate_json(await request.body())
        form = await request.form()
        return LoginRequest.model_validate(
            {"username": form.get("username"), "password": form.get("password")}
        )
    except (ValidationError, ValueError, AssertionError):
        raise InvalidRequest("Send a username and password, as JSON or as a form.") from None
