"""The HTTP client of a docintel server (httpx + httpx-sse) and the stored login.

Everything that can go wrong talking to the server becomes a `ClientError`
with the exit status the spec gives it; the commands turn that into one line
on stderr. No Typer or Rich here.
"""

from __future__ import annotations

import builtins
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any

import httpx
from httpx_sse import connect_sse
from platformdirs import user_config_path

from docintel.core.errors import DocintelError
from docintel.core.models import TERMINAL

DEFAULT_URL = "http://127.0.0.1:8000"
LOGIN_FILE = "login.json"

# Exit statuses of the spec.
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SERVER = 3


class ClientError(DocintelError):
    """The request could not be completed."""

    code = "client_error"
    exit_code = EXIT_FAILED


class Unreachable(ClientError):
    """The server cannot be reached."""

    code = "unreachable"
    exit_code = EXIT_SERVER


class NotAuthenticated(ClientError):
    """Not logged in or token expired — run `docintel login`."""

    code = "not_authenticated"
    exit_code = EXIT_SERVER


class ApiError(ClientError):
    """The server refused the request."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NotFound(ApiError):
    """No such document."""


class RateLimited(ApiError):
    """The server asks us to slow down (429); `retry_after` is in seconds."""

    def __init__(self, code: str, message: str, retry_after: float) -> None:
        super().__init__(429, code, message)
        self.retry_after = retry_after


def unreachable(url: str) -> Unreachable:
    """The one way of saying the server is not there (the caller raises it)."""
    return Unreachable(f"cannot reach the server at {url} — is `docintel serve` running?")


# --- the stored login -------------------------------------------------------


@dataclass
class Login:
    url: str = DEFAULT_URL
    token: str | None = None
    username: str | None = None
    expires_at: float | None = None  # epoch seconds; unknown for DOCINTEL_TOKEN

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= time.time()


def cli_config_dir() -> Path:
    """Where the CLI keeps its login; DOCINTEL_CONFIG_DIR moves it (tests do)."""
    override = os.environ.get("DOCINTEL_CONFIG_DIR")
    return Path(override) if override else user_config_path("docintel")


def login_path() -> Path:
    return cli_config_dir() / LOGIN_FILE


def load_login() -> Login:
    """The stored login, with DOCINTEL_URL and DOCINTEL_TOKEN taking precedence."""
    stored = Login()
    try:
        raw = json.loads(login_path().read_text())
        stored = Login(
            url=str(raw.get("url") or DEFAULT_URL),
            token=raw.get("token"),
            username=raw.get("username"),
            expires_at=raw.get("expires_at"),
        )
    except (OSError, ValueError, AttributeError):
        pass  # no login yet, or an unreadable file: as if logged out
    env_url = os.environ.get("DOCINTEL_URL")
    env_token = os.environ.get("DOCINTEL_TOKEN")
    if env_url:
        stored.url = env_url
    if env_token:
        stored.token, stored.username, stored.expires_at = env_token, None, None
    return stored


def save_login(login: Login) -> Path:
    """Write the login file with mode 0600 from the start (never world-readable)."""
    path = login_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(
            {
                "url": login.url,
                "token": login.token,
                "username": login.username,
                "expires_at": login.expires_at,
            },
            f,
            indent=2,
        )
    os.chmod(tmp, 0o600)  # in case the file existed with other bits
    os.replace(tmp, path)
    return path


def check_url(url: str) -> str:
    """A usable base URL, or Unreachable with a one-line reason."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise Unreachable(f"invalid server URL {url!r} — expected e.g. {DEFAULT_URL}")
    return url.rstrip("/")


# --- events -----------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One status event of the stream (`id` is None for a document found deleted)."""

    id: int | None
    data: dict[str, Any]

    @property
    def document_id(self) -> str:
        return str(self.data["document_id"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL or self.deleted

    @property
    def deleted(self) -> bool:
        return self.id is None

    def as_json(self) -> dict[str, Any]:
        if self.deleted:
            return {"event": "deleted", **self.data}
        return {"event": "status", "event_id": self.id, **self.data}


def deleted_event(document_id: str, filename: str | None = None) -> Event:
    return Event(
        None,
        {
            "document_id": document_id,
            "status": "deleted",
            "filename": filename,
            "timestamp": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "error": "The document does not exist (deleted?).",
        },
    )


# --- the client ---------------------------------------------------------------


@dataclass
class Client:
    """One server, one token. Use as a context manager."""

    url: str
    token: str | None = None
    timeout: float = 30.0
    #: how long the stream keeps retrying a lost connection before giving up
    reconnect_for: float = 60.0
    on_reconnect: Callable[[str], None] | None = None
    _http: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.url = check_url(self.url)
        self._http = httpx.Client(base_url=self.url, timeout=self.timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    @classmethod
    def from_login(cls, login: Login, *, need_token: bool = True) -> Client:
        if need_token and not login.token:
            raise NotAuthenticated("not logged in — run `docintel login`")
        if need_token and login.expired:
            when = datetime.fromtimestamp(login.expires_at or 0).strftime("%Y-%m-%d %H:%M")
            raise NotAuthenticated(f"your login expired at {when} — run `docintel login`")
        return cls(login.url, login.token)

    # -- plumbing --

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @contextmanager
    def _transport(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException:
            raise Unreachable(f"the server at {self.url} did not answer in time") from None
        except (httpx.TransportError, httpx.InvalidURL):
            raise unreachable(self.url) from None

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._transport():
            response = self._http.request(method, path, headers=self._auth, **kwargs)
        self._raise_for(response)
        return response

    def _raise_for(self, response: httpx.Response, *, ok: Sequence[int] = ()) -> None:
        if response.is_success or response.status_code in ok:
            return
        code, message = _error_of(response)
        if response.status_code == 401:
            if code == "invalid_credentials":
                raise NotAuthenticated("wrong username or password")
            raise NotAuthenticated("not logged in or token expired — run `docintel login`")
        if response.status_code == 404:
            raise NotFound(404, code or "not_found", message or "no such document")
        if response.status_code == 429:
            raise RateLimited(
                code or "rate_limited", message or "too many requests", _retry_after(response)
            )
        raise ApiError(
            response.status_code, code or "http_error", message or response.reason_phrase
        )

    # -- the API --

    def login(self, username: str, password: str) -> dict[str, Any]:
        response = self._request(
            "POST", "/auth/login", json={"username": username, "password": password}
        )
        body: dict[str, Any] = response.json()
        self.token = body["access_token"]
        return body

    def list(
        self, statuses: Sequence[str] = (), limit: int = 50, offset: int = 0
    ) -> dict[str, Any]:
        params: list[tuple[str, str | int]] = [("status", s) for s in statuses]
        params += [("limit", limit), ("offset", offset)]
        return self._request("GET", "/documents", params=params).json()  # type: ignore[no-any-return]

    def get(self, document_id: str) -> dict[str, Any]:
        return self._request("GET", f"/documents/{document_id}").json()  # type: ignore[no-any-return]

    def status(self, document_id: str) -> dict[str, Any]:
        return self._request("GET", f"/documents/{document_id}/status").json()  # type: ignore[no-any-return]

    def delete(self, document_id: str) -> None:
        self._request("DELETE", f"/documents/{document_id}")

    def upload(
        self, path: Path, on_progress: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """Upload one file; returns the server's `{"documents", "errors"}` body.

        A rejection (4xx with that body) is returned, not raised: it is an
        answer about the file, not a failure of the request. A 429 raises
        `RateLimited`: the file was not looked at, and may be sent again later.
        """
        with path.open("rb") as f:
            body = _CountingFile(f, on_progress) if on_progress else f
            with self._transport():
                response = self._http.post(
                    "/documents/upload",
                    headers=self._auth,
                    files=[("files", (path.name, body))],  # type: ignore[list-item]
                    timeout=httpx.Timeout(self.timeout, write=None, read=None),
                )
        if response.status_code in (400, 413, 415, 422) and _is_upload_result(response):
            return response.json()  # type: ignore[no-any-return]
        if response.status_code == 413:  # the whole request was too large
            code, message = _error_of(response)
            return {
                "documents": [],
                "errors": [
                    {
                        "filename": path.name,
                        "code": code or "file_too_large",
                        "message": message or "The file is too large.",
                    }
                ],
            }
        self._raise_for(response)
        return response.json()  # type: ignore[no-any-return]

    def events(self, document_ids: Sequence[str] = (), after: int | None = None) -> Iterator[Event]:
        """Status events, reconnecting with Last-Event-ID so none is missed.

        With `document_ids`, a document that does not exist (or stops existing:
        the reconnect then answers 404) yields one `deleted` event and is
        dropped from the stream. The iterator ends only when every document
        asked for is gone; callers stop it when they have seen enough.
        """
        ids = list(dict.fromkeys(document_ids))
        last = after
        failing_since: float | None = None
        delay = 0.2
        timeout = httpx.Timeout(self.timeout, read=None)  # pings come every 15 s
        while True:
            params: list[tuple[str, str]] = [("document_id", i) for i in ids]
            headers = dict(self._auth)
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                with connect_sse(
                    self._http,
                    "GET",
                    "/documents/stream",
                    params=params,
                    headers=headers,
                    timeout=timeout,
                ) as source:
                    response = source.response
                    if response.status_code == 404 and ids:
                        response.read()
                        gone = self._gone(ids)
                        if not gone:  # a 404 for something else
                            self._raise_for(response)
                        for doc_id in gone:
                            ids.remove(doc_id)
                            yield deleted_event(doc_id)
                        if not ids:
                            return
                        continue
                    if not response.is_success:
                        response.read()
                        self._raise_for(response)
                    failing_since, delay = None, 0.2
                    for sse in source.iter_sse():
                        if not sse.data:
                            continue  # keep-alive comment, seen as an empty event
                        if sse.id:
                            last = int(sse.id)
                        yield Event(last, json.loads(sse.data))
                # The server ended the stream (it is shutting down): reconnect.
                reason = "the server closed the stream"
            except (
                httpx.RemoteProtocolError,
                httpx.ReadError,
                httpx.ConnectError,
                httpx.ConnectTimeout,
                httpx.WriteError,
            ) as exc:
                if last is None and failing_since is None and isinstance(exc, httpx.ConnectError):
                    # Never connected at all: say so at once rather than retry.
                    raise unreachable(self.url) from None
                reason = "the connection was lost"
            except httpx.TransportError:
                raise unreachable(self.url) from None
            now = time.monotonic()
            first_failure = failing_since is None
            failing_since = failing_since or now
            if now - failing_since > self.reconnect_for:
                raise Unreachable(
                    f"lost the server at {self.url} and could not reconnect for "
                    f"{self.reconnect_for:.0f} s"
                )
            if self.on_reconnect and first_failure:
                self.on_reconnect(f"{reason}; reconnecting…")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _gone(self, ids: Sequence[str]) -> builtins.list[str]:  # `list` is a method here
        gone = []
        for doc_id in ids:
            try:
                self.status(doc_id)
            except NotFound:
                gone.append(doc_id)
        return gone


class _CountingFile:
    """A read-only file wrapper that reports bytes as httpx reads them."""

    def __init__(self, f: IO[bytes], report: Callable[[int], None]) -> None:
        self._f = f
        self._report = report

    def read(self, size: int = -1) -> bytes:
        chunk = self._f.read(size)
        if chunk:
            self._report(len(chunk))
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


def _error_of(response: httpx.Response) -> tuple[str | None, str | None]:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return None, None
    if isinstance(detail, dict):
        return detail.get("code"), detail.get("message")
    if isinstance(detail, str):
        return None, detail
    if isinstance(detail, list) and detail:  # FastAPI validation errors
        first = detail[0]
        return "invalid_request", str(first.get("msg") if isinstance(first, dict) else first)
    return None, None


def _retry_after(response: httpx.Response, default: float = 1.0) -> float:
    """Retry-After in seconds (delta-seconds or an HTTP date); `default` if absent or bad."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _is_upload_result(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "errors" in body and "documents" in body
