"""Login, token issue and verification, and the CurrentUser dependencies."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import jwt
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from docintel.core.config import Settings
from docintel.core.db import Database
from docintel.core.errors import NotAuthenticated, TooManyRequests
from docintel.core.ratelimit import Limiter, LocalLimiter, limiter

ALGORITHM = "HS256"
SECRET_FILE = "jwt_secret"


def load_secret(settings: Settings) -> str:
    """DOCINTEL_JWT_SECRET, else a random key created once in the data dir (0600)."""
    if settings.jwt_secret:
        return settings.jwt_secret
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / SECRET_FILE
    for _ in range(3):
        try:
            secret = path.read_text().strip()
        except FileNotFoundError:
            secret = ""
        if secret:
            return secret
        _create_secret(path)
    raise RuntimeError(f"could not create the JWT secret file {path}")


def _create_secret(path: Path) -> None:
    """Write a new key to a private temp file, then link it into place.

    The link is atomic and fails if the file exists, so two processes starting
    at once agree on one key, and a crash never leaves an empty key file.
    An existing empty file (from an older crash) is replaced.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".jwt-")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
        if path.exists() and path.stat().st_size == 0:
            os.replace(tmp, path)
            return
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# The claim that binds a token to its user's password (see Authenticator.binding).
BINDING_CLAIM = "pwb"


class Authenticator:
    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        """`db`: where to keep the login limits when API nodes share it (PostgreSQL)."""
        self.users = dict(settings.users)
        self.ttl = settings.token_ttl
        self._secret = load_secret(settings)
        self._bindings = {name: self.binding(name, pw) for name, pw in self.users.items()}
        # Failures per (username, address) slow the guessing of one password from
        # one place; per address, the spraying of many. Never per username alone:
        # then anyone could keep a user out, even with the right password (OWASP).
        shared = db is not None and settings.shared_database
        self.failures_per_account = _limiter(
            db, shared, "login-account", settings.login_attempts_per_minute
        )
        self.failures_per_address = _limiter(
            db, shared, "login-address", settings.login_attempts_per_address_per_minute
        )

    async def login(self, username: str, password: str, address: str) -> str:
        """A token for valid credentials; 429 after too many failures, else 401."""
        account = _account_key(username, address)
        wait = max(
            await self.failures_per_address.retry_after(address),
            await self.failures_per_account.retry_after(account),
        )
        if wait:
            raise _too_many(wait)
        if not self.check_password(username, password):
            await self.failures_per_account.hit(account)
            await self.failures_per_address.hit(address)
            raise unauthorized("invalid_credentials", "Wrong username or password.")
        return self.issue(username)

    async def check_address(self, address: str) -> None:
        """Raise 429 if `address` has failed too often: checked before its body is read."""
        wait = await self.failures_per_address.retry_after(address)
        if wait:
            raise _too_many(wait)

    async def count_malformed(self, address: str) -> None:
        """A login that could not be read (bad JSON, missing fields, too large) is a failure."""
        await self.failures_per_address.hit(address)

    def check_password(self, username: str, password: str) -> bool:
        expected = self.users.get(username)
        # Compare against something even for unknown users, so timing says nothing.
        candidate = (expected or "\x00" * 32).encode()
        matches = hmac.compare_digest(candidate, password.encode())
        return expected is not None and matches

    def binding(self, username: str, password: str) -> str:
        """A short keyed digest of the password, carried in every token.

        A token stays valid only while its user's password is the one it was
        issued for. Keyed with the signing secret, so the claim (readable by
        anyone holding the token) tells nothing about the password; the prefix
        keeps it apart from the JWT signatures made with the same key.
        """
        message = b"password-binding\0" + username.encode() + b"\0" + password.encode()
        digest = hmac.digest(self._secret.encode(), message, hashlib.sha256)
        return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()

    def issue(self, username: str) -> str:
        now = int(time.time())
        claims = {
            "sub": username,
            "iat": now,
            "exp": now + self.ttl,
            BINDING_CLAIM: self._bindings[username],
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> str:
        """The username a valid token names; raises HTTP 401 otherwise."""
        return self.verify_session(token).username

    def verify_session(self, token: str) -> Session:
        """Who a valid token names, and until when; raises HTTP 401 otherwise."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("token_expired", "The token has expired; log in again.") from None
        except jwt.InvalidTokenError:
            raise unauthorized("invalid_token", "The token is not valid; log in again.") from None
        username = claims.get("sub")
        if not isinstance(username, str) or username not in self.users:
            raise unauthorized("invalid_token", "The token names no known user; log in again.")
        bound = claims.get(BINDING_CLAIM)
        if not isinstance(bound, str) or not hmac.compare_digest(
            bound.encode(), self._bindings[username].encode()
        ):
            raise unauthorized(
                "invalid_token",
                "The token was issued before the user's password changed; log in again.",
            )
        return Session(username, int(claims["exp"]))


def _account_key(username: str, address: str) -> str:
    # A NUL cannot occur in an address, so no username can forge another pair's key.
    return f"{address}\0{username}"


def _too_many(wait: int) -> TooManyRequests:
    return TooManyRequests(
        f"Too many failed logins; try again in {wait} s.", wait, code="too_many_attempts"
    )


@dataclass(frozen=True)
class Session:
    """A verified token: its user, and when it expires (epoch seconds)."""

    username: str
    expires_at: int


def _limiter(db: Database | None, shared: bool, name: str, per_minute: int) -> Limiter:
    if shared and db is not None:
        return limiter(db, True, name, per_minute)
    return LocalLimiter(per_minute)


def unauthorized(code: str, message: str) -> NotAuthenticated:
    return NotAuthenticated(message, code=code)


bearer = HTTPBearer(auto_error=False, description="A token from POST /auth/login.")


def _authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator


def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    if credentials is None:
        raise unauthorized("not_authenticated", "Authentication required: send a bearer token.")
    return _authenticator(request).verify(credentials.credentials)


def stream_session_of(connection: HTTPConnection) -> Session:
    """A stream's session (SSE or WebSocket): the token from `Authorization: Bearer …`,
    else from `?access_token=` (browsers' EventSource and WebSocket send no headers)."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        token = connection.query_params.get("access_token", "")
    if not token.strip():
        raise unauthorized("not_authenticated", "Authentication required: send a bearer token.")
    authenticator: Authenticator = connection.app.state.authenticator
    return authenticator.verify_session(token.strip())


def stream_session(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    access_token: Annotated[
        str | None, Query(description="For EventSource clients, which cannot send headers.")
    ] = None,
) -> Session:
    # The parameters declare where the token may be (the schema shows them);
    # stream_session_of reads it, as the WebSocket and the stream route do.
    return stream_session_of(request)


CurrentUser = Annotated[str, Depends(current_user)]
StreamSession = Annotated[Session, Depends(stream_session)]
