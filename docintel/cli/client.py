"""The HTTP client of a docintel server (httpx + httpx-sse).

Everything that can go wrong talking to the server becomes a `ClientError`
with the exit status the spec gives it; the commands turn that into one line
on stderr. An answer without docintel's error envelope or JSON is said to come
from something that is not a docintel server. The stored logins (one per
server) are in `logins.py`. No Typer or Rich here.
"""

from __future__ import annotations

import base64
import builtins
import json
import ssl
import string
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

from docintel.cli.logins import DEFAULT_URL, InvalidServerURL, Login, normalise_url, save_login
from docintel.core.errors import DocintelError
from docintel.core.statuses import TERMINAL

#: The server writes a token's times in whole seconds (JWT `iat`/`exp`), so a
#: token may expire up to this long before "when we asked + expires_in".
WHOLE_SECONDS = 1.0

# Exit statuses of the spec.
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SERVER = 3


#: A resumable upload is sent in pieces of this size; a dropped connection costs at most one.
RESUMABLE_CHUNK = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


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


class NotDocintel(ClientError):
    """The server is not a docintel server."""

    code = "not_docintel"
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


HEX_DIGITS = string.hexdigits


def unreachable(url: str) -> Unreachable:
    """The one way of saying the server is not there (the caller raises it)."""
    return Unreachable(f"cannot reach the server at {url} — is `docintel serve` running?")


def check_url(url: str) -> str:
    """The normalised base URL (see `logins.normalise_url`), or Unreachable with a reason."""
    try:
        return normalise_url(url)
    except InvalidServerURL:
        raise Unreachable(
            f"invalid server URL {url!r} — expected e.g. {DEFAULT_URL} or localhost:8000"
        ) from None


def document_path(document_id: str, rest: str = "") -> str:
    """`/documents/{id}{rest}`. An id (or a prefix of one) is hexadecimal, so
    anything else is no document and is not sent: `stream` would open the event
    stream, `a/b` another path."""
    key = document_id.strip()
    if not key or key.strip(HEX_DIGITS):
        raise NotFound(404, "not_found", f"No document with id {document_id!r}.")
    return f"/documents/{key}{rest}"


def login_hint(url: str) -> str:
    return f"run `docintel login --url {url}`"


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
    """One server, and only the token that server issued. Use as a context manager.

    A token that is in the second half of its lifetime is exchanged for a fresh
    one (`POST /auth/refresh`) before the next request, and before and while
    following the event stream; `on_token` stores it (stored logins only).
    """

    url: str
    token: str | None = None
    timeout: float = 30.0
    #: how long the stream keeps retrying a lost connection before giving up
    reconnect_for: float = 60.0
    on_reconnect: Callable[[str], None] | None = None
    #: when the token was issued and expires (epoch seconds, our clock); None: unknown
    issued_at: float | None = None
    expires_at: float | None = None
    #: called with the login a refresh produced, to keep it
    on_token: Callable[[Login], object] | None = None
    #: where the token came from, for messages: a stored login or DOCINTEL_TOKEN
    token_source: str = "login"
    username: str | None = None
    _http: httpx.Client = field(init=False, repr=False)
    _can_refresh: bool = field(init=False, default=True, repr=False)

    def __post_init__(self) -> None:
        self.url = check_url(self.url)
        # Redirects are not followed (httpx's default, kept on purpose): a
        # token must not follow a redirect to another server.
        self._http = httpx.Client(base_url=self.url, timeout=self.timeout, verify=_verify(self.url))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    @classmethod
    def from_login(cls, login: Login, *, need_token: bool = True) -> Client:
        if need_token and not login.token:
            raise NotAuthenticated(f"not logged in to {login.url} — {login_hint(login.url)}")
        if need_token and login.expired:
            when = datetime.fromtimestamp(login.expires_at or 0).strftime("%Y-%m-%d %H:%M")
            raise NotAuthenticated(
                f"your login to {login.url} expired at {when} — {login_hint(login.url)}"
            )
        made = cls(
            login.url,
            login.token,
            issued_at=login.issued_at,
            expires_at=login.expires_at,
            token_source="DOCINTEL_TOKEN" if login.explicit else "login",
            username=login.username,
        )
        if login.token and not login.explicit:
            made.on_token = lambda fresh: save_login(fresh, make_default=False)
        return made

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
        except httpx.ConnectError as exc:
            reason = _tls_failed(exc)  # it answered, but not in TLS (or with a refused certificate)
            if reason is None:
                raise unreachable(self.url) from None
            raise Unreachable(
                f"the server at {self.url} did not complete a TLS handshake ({reason}) — "
                f"if it serves plain HTTP, use {self.url.replace('https://', 'http://', 1)}"
            ) from None
        except (httpx.TransportError, httpx.InvalidURL):
            raise unreachable(self.url) from None

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self._refresh_if_due()
        with self._transport():
            response = self._http.request(method, path, headers=self._auth, **kwargs)
        self._raise_for(response)
        return response

    def _raise_for(self, response: httpx.Response, *, ok: Sequence[int] = ()) -> None:
        if response.is_success or response.status_code in ok:
            return
        envelope = _envelope(response)
        if envelope is None:  # every docintel error carries one
            raise self._foreign(response)
        code, message = envelope
        if response.status_code == 401:
            if code == "invalid_credentials":
                raise NotAuthenticated("wrong username or password")
            if self.token_source != "login":
                raise NotAuthenticated(
                    f"the server at {self.url} refused the token in {self.token_source} ({message})"
                )
            if code == "token_expired":
                raise NotAuthenticated(f"your login to {self.url} expired — {login_hint(self.url)}")
            raise NotAuthenticated(
                f"not logged in to {self.url} or the token is no longer valid — "
                f"{login_hint(self.url)}"
            )
        if response.status_code == 404:
            raise NotFound(404, code, message)
        if response.status_code == 429:
            raise RateLimited(code, message, _retry_after(response))
        raise ApiError(response.status_code, code, message)

    def _foreign(self, response: httpx.Response) -> ClientError:
        """What to say about an answer that did not come from docintel."""
        status = f"{response.status_code} {response.reason_phrase}".strip()
        if response.status_code in (502, 503, 504):  # a proxy whose docintel is down
            return Unreachable(
                f"the server at {self.url} answered {status} — is docintel running behind it?"
            )
        what = f"it answered {_printable(status)}"
        if response.is_redirect and response.headers.get("location"):
            what += f", redirecting to {_printable(response.headers['location'])}"
        elif content_type := response.headers.get("content-type", "").split(";")[0]:
            what += f" with {_printable(content_type)}"
        return NotDocintel(f"the server at {self.url} is not a docintel server ({what})")

    def _json(self, response: httpx.Response, *keys: str) -> dict[str, Any]:
        """The JSON object of a successful answer, which must have `keys`."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not all(k in body for k in keys):
            content_type = response.headers.get("content-type", "").split(";")[0] or "no type"
            raise NotDocintel(
                f"the server at {self.url} is not a docintel server (it answered "
                f"{response.request.url.path} with {_printable(content_type)}, not docintel's JSON)"
            )
        return body

    # -- the token --

    def _refresh_if_due(self, *, learn: bool = False) -> None:
        """Refresh a token in the second half of its lifetime; with `learn`, also
        one whose lifetime is unknown (DOCINTEL_TOKEN), to learn it."""
        if not self.token or not self._can_refresh:
            return
        if self.issued_at is None or self.expires_at is None:
            if learn:
                self.refresh()
            return
        lifetime = self.expires_at - self.issued_at
        if time.time() >= self.expires_at - lifetime / 2:
            self.refresh()

    def _check_every(self) -> float | None:
        """How often a quiet stream must look at the token (None: no need).

        A quarter of its lifetime: the token falls due with half of it left,
        so it is refreshed with at least a quarter left, events or not.
        """
        if not self.token or not self._can_refresh or self.expires_at is None:
            return None
        if self.issued_at is None:
            return None
        return max(0.5, (self.expires_at - self.issued_at) / 4)

    def refresh(self) -> None:
        """Exchange the (still valid) token for a fresh one, and keep it.

        A docintel server too old to have /auth/refresh is left alone: the
        token is then used until it expires, as before.
        """
        issued_at = time.time() - WHOLE_SECONDS  # see WHOLE_SECONDS
        with self._transport():
            response = self._http.post("/auth/refresh", headers=self._auth)
        if response.status_code in (404, 405) and _envelope(response) is not None:
            self._can_refresh = False
            return
        self._raise_for(response)
        body = self._json(response, "access_token", "expires_in")
        self.token = str(body["access_token"])
        self.issued_at, self.expires_at = issued_at, issued_at + float(body["expires_in"])
        if self.on_token:
            self.on_token(
                Login(
                    url=self.url,
                    token=self.token,
                    username=self.username,
                    issued_at=self.issued_at,
                    expires_at=self.expires_at,
                )
            )

    # -- the API --

    def check_server(self) -> None:
        """Make sure a docintel server answers at the URL (before sending it a password)."""
        with self._transport():
            response = self._http.get("/healthz")
        if not response.is_success:
            raise self._foreign(response)
        if self._json(response, "status").get("status") != "ok":
            raise NotDocintel(f"the server at {self.url} is not a docintel server")

    def login(self, username: str, password: str) -> dict[str, Any]:
        issued_at = time.time() - WHOLE_SECONDS  # see WHOLE_SECONDS
        response = self._request(
            "POST", "/auth/login", json={"username": username, "password": password}
        )
        body = self._json(response, "access_token", "expires_in")
        self.token = str(body["access_token"])
        self.username = username
        self.issued_at, self.expires_at = issued_at, issued_at + float(body["expires_in"])
        return body

    def list(
        self, statuses: Sequence[str] = (), limit: int = 50, offset: int = 0
    ) -> dict[str, Any]:
        params: list[tuple[str, str | int]] = [("status", s) for s in statuses]
        params += [("limit", limit), ("offset", offset)]
        return self._json(self._request("GET", "/documents", params=params), "items")

    def get(self, document_id: str) -> dict[str, Any]:
        return self._json(self._request("GET", document_path(document_id)), "id", "status")

    def status(self, document_id: str) -> dict[str, Any]:
        return self._json(self._request("GET", document_path(document_id, "/status")), "status")

    def delete(self, document_id: str) -> None:
        response = self._request("DELETE", document_path(document_id))
        if response.status_code != 204:  # docintel answers a delete with no content
            raise self._foreign(response)

    def upload(
        self, path: Path, on_progress: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """Upload one file; returns the server's `{"documents", "errors"}` body.

        A rejection (4xx with that body) is returned, not raised: it is an
        answer about the file, not a failure of the request. A 429 raises
        `RateLimited`: the file was not looked at, and may be sent again later.
        """
        self._refresh_if_due()
        with path.open("rb") as f:
            body = _CountingFile(f, on_progress) if on_progress else f
            with self._transport():
                response = self._http.post(
                    "/documents/upload",
                    headers=self._auth,
                    files=[("files", (path.name, body))],  # type: ignore[list-item]
                    timeout=httpx.Timeout(self.timeout, write=None, read=None),
                )
        # 507: the server's disk is full; the answer still says file by file.
        if response.status_code in (400, 413, 415, 422, 507) and _is_upload_result(response):
            return response.json()  # type: ignore[no-any-return]
        if response.status_code == 413:  # the whole request was too large (maybe a proxy's limit)
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
        return self._json(response, "documents", "errors")

    def upload_resumable(
        self,
        path: Path,
        on_progress: Callable[[int], None] | None = None,
        on_restart: Callable[[], None] | None = None,
        chunk: int = RESUMABLE_CHUNK,
    ) -> dict[str, Any]:
        """Upload one file over tus (/uploads/), chunk by chunk; returns what `upload` does.

        A dropped connection does not start the file again: the client asks the
        server how much it has (HEAD) and goes on from there, for up to
        `reconnect_for` seconds of failures in a row. A server without /uploads/
        raises `NotFound` (the caller may fall back to `upload`).
        """
        size = path.stat().st_size
        self._refresh_if_due()
        with self._transport():
            created = self._http.post(
                "/uploads/",
                headers={
                    **self._auth,
                    **TUS,
                    "Upload-Length": str(size),
                    "Upload-Metadata": "filename " + base64.b64encode(path.name.encode()).decode(),
                },
            )
        if created.status_code in (400, 413, 415, 507) and _envelope(created):
            return _rejected(path, created)
        self._raise_for(created)
        location = created.headers.get("location")
        if created.status_code != 201 or not location:
            raise self._foreign(created)
        offset: int | None = 0
        failing_since: float | None = None
        with path.open("rb") as f:
            while True:
                try:
                    if offset is None:  # after a failure: where is the server?
                        offset, document_id = self._upload_offset(location)
                        if document_id is not None:  # it finished; its answer was lost
                            return {"documents": [self.get(document_id)], "errors": []}
                        if on_restart:
                            on_restart()
                        if on_progress:
                            on_progress(offset)
                    f.seek(offset)
                    data = f.read(chunk)
                    self._refresh_if_due()
                    with self._transport():
                        response = self._http.patch(
                            location,
                            headers={
                                **self._auth,
                                **TUS,
                                "Upload-Offset": str(offset),
                                "Content-Type": "application/offset+octet-stream",
                            },
                            content=data,
                            timeout=httpx.Timeout(self.timeout, write=None),
                        )
                except Unreachable as exc:
                    now = time.monotonic()
                    failing_since = failing_since or now
                    if now - failing_since > self.reconnect_for:
                        raise
                    if self.on_reconnect:
                        self.on_reconnect(f"{exc.message}; resuming the upload…")
                    time.sleep(min(2.0, 0.2 + (now - failing_since) / 4))
                    offset = None
                    continue
                failing_since = None
                if response.status_code == 204:
                    offset = _int_header(response, "upload-offset", offset + len(data))
                    if on_progress:
                        on_progress(len(data))
                    continue
                if response.status_code == 200:
                    return {"documents": [self._json(response, "id", "status")], "errors": []}
                if response.status_code == 409:  # not where we thought: ask
                    offset = None
                    continue
                if response.status_code in (400, 413, 415, 507) and _envelope(response):
                    return _rejected(path, response)
                self._raise_for(response)
                raise self._foreign(response)

    def _upload_offset(self, location: str) -> tuple[int, str | None]:
        """(bytes the server has, the document it became if it is complete)."""
        with self._transport():
            response = self._http.head(location, headers={**self._auth, **TUS})
        self._raise_for(response)
        try:
            offset = int(response.headers["upload-offset"])
        except (KeyError, ValueError):
            raise self._foreign(response) from None
        return offset, response.headers.get("docintel-document-id")

    def events(self, document_ids: Sequence[str] = (), after: int | None = None) -> Iterator[Event]:
        """Status events, reconnecting with Last-Event-ID so none is missed.

        With `document_ids`, a document that does not exist (or stops existing:
        the server says so with `event: deleted` when the stream is quiet, or
        a reconnect answers 404) yields one `deleted` event and is dropped
        from the stream. The iterator ends only when every document
        asked for is gone; callers stop it when they have seen enough.

        The token is refreshed before it expires — as events and keep-alives
        arrive, before each reconnect, and, when the stream is quiet, by
        reconnecting when it falls due — so a stream can be followed for days.
        """
        ids = list(dict.fromkeys(document_ids))
        last = after
        failing_since: float | None = None
        retry = 0.2  # the server's `retry:` replaces this first wait
        delay = retry
        connected_once = False
        self._refresh_if_due(learn=True)
        while True:
            params: list[tuple[str, str]] = [("document_id", i) for i in ids]
            connected = False
            try:
                self._refresh_if_due()
                headers = dict(self._auth)
                if last is not None:
                    headers["Last-Event-ID"] = str(last)
                # Pings come every 15 s, and a token lasts an hour: the token is
                # looked at as they arrive. With shorter lifetimes, a quiet
                # stream is left on a read timeout to refresh it, and resumed
                # with Last-Event-ID.
                read = self._check_every()
                with connect_sse(
                    self._http,
                    "GET",
                    "/documents/stream",
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(self.timeout, read=read),
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
                    if "text/event-stream" not in response.headers.get("content-type", ""):
                        response.read()
                        raise self._foreign_stream(response)
                    connected = connected_once = True
                    failing_since, delay = None, retry
                    reauth = False
                    for sse in source.iter_sse():
                        self._refresh_quietly()
                        if sse.event == "deleted":  # one of ours, found gone by the server
                            found = str(json.loads(sse.data)["document_id"])
                            for doc_id in [i for i in ids if found.startswith(i.lower())]:
                                ids.remove(doc_id)
                                yield deleted_event(doc_id)
                            if not ids:
                                return
                            continue
                        if sse.event == "reauth":
                            # The stream's token is about to expire: come back
                            # at once with a fresh one, from the last id.
                            reauth = True
                            break
                        if sse.retry is not None:
                            retry = delay = sse.retry / 1000
                        if sse.id:  # also an id-only event: the server's position
                            last = int(sse.id)
                        if not sse.data:
                            continue  # a keep-alive, or the position at connect
                        yield Event(last, json.loads(sse.data))
                if reauth:
                    self._refresh_if_due(learn=True)
                    continue
                # The server ended the stream (it is shutting down): reconnect.
                reason = "the server closed the stream"
            except httpx.ReadTimeout:
                if connected:  # quiet for a while: look at the token, come back
                    continue
                reason = "the server did not answer"
            except (
                httpx.RemoteProtocolError,
                httpx.ReadError,
                httpx.ConnectError,
                httpx.ConnectTimeout,
                httpx.WriteError,
            ):
                if not connected_once:
                    # Never connected at all: say so at once rather than retry.
                    raise unreachable(self.url) from None
                reason = "the connection was lost"
            except Unreachable:  # a refresh or a proxy failed while reconnecting
                if not connected_once:
                    raise
                reason = "the connection was lost"
            except httpx.TransportError:
                raise unreachable(self.url) from None
            except RateLimited as exc:  # the server's stream caps: wait as it says
                reason = f"the server is busy ({exc.message})"
                delay = max(delay, min(exc.retry_after, 30.0))
            except ApiError as exc:
                if exc.status != 503:  # 503: the connection cap, or a proxy's
                    raise
                reason = f"the server is busy ({exc.message})"
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

    def _refresh_quietly(self) -> None:
        """Refresh while a stream is open; a failure to reach the server is
        retried at the next event or reconnect, a refused token is final."""
        try:
            self._refresh_if_due()
        except Unreachable:
            pass
        except ApiError as exc:
            if exc.status < 500:
                raise

    def _foreign_stream(self, response: httpx.Response) -> NotDocintel:
        content_type = response.headers.get("content-type", "").split(";")[0] or "no type"
        return NotDocintel(
            f"the server at {self.url} is not a docintel server (it answered "
            f"{response.request.url.path} with {_printable(content_type)}, not an event stream)"
        )

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


def _verify(url: str) -> ssl.SSLContext | bool:
    """How to check the server's certificate: httpx's default (certifi's CA
    bundle) for https. A plain http:// server has none, yet httpx would load
    and parse the whole bundle for every client it makes (encode/httpx#2298):
    40-100 ms per command on our 2-core machine, against under 1 ms with the
    context below. Redirects are not followed and every request goes to
    `url`, so no TLS connection is ever made; should one be, a context that
    trusts no CA refuses it (fails closed).
    """
    if url.startswith("https:"):
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _tls_failed(exc: BaseException) -> str | None:
    """The TLS error behind a failed connection (its reason), if that was one."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return str(getattr(cause, "reason", None) or cause)
        cause = cause.__cause__ or cause.__context__
    return None


def _printable(text: str, limit: int = 120) -> str:
    """A header of a server we do not know, safe to print on a terminal."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def _envelope(response: httpx.Response) -> tuple[str, str] | None:
    """(code, message) of docintel's error body `{"detail": {"code", "message"}}`, else None."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return None
    if not isinstance(detail, dict):
        return None
    code, message = detail.get("code"), detail.get("message")
    if isinstance(code, str) and isinstance(message, str):
        return code, message
    return None


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


def _int_header(response: httpx.Response, name: str, default: int) -> int:
    value = response.headers.get(name, "")
    return int(value) if value.isascii() and value.isdigit() else default


def _rejected(path: Path, response: httpx.Response) -> dict[str, Any]:
    """A refusal of the whole file as the upload result it stands for."""
    code, message = _envelope(response) or ("rejected", "The file was refused.")
    return {"documents": [], "errors": [{"filename": path.name, "code": code, "message": message}]}


def _is_upload_result(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "errors" in body and "documents" in body
