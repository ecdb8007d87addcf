"""The CLI's stored logins: one per server URL, and which server is the default.

`login.json` in the user config dir (mode 0600) maps each normalised server
URL to the login that server issued, plus the server used when no `--url` or
`DOCINTEL_URL` names one (the last one logged in to):

    {"default": "http://127.0.0.1:8000",
     "logins": {"http://127.0.0.1:8000": {"username": "demo", "token": "…",
                                           "issued_at": 1764054000.0,
                                           "expires_at": 1764057600.0}}}

A token is only ever looked up by the URL it is about to be sent to, so a
token goes back only to the server that issued it. `DOCINTEL_TOKEN` is the
user's own choice and goes wherever they point it. No Typer or Rich here.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

try:  # POSIX: serialise read-modify-write of the file between CLI processes
    import fcntl
except ImportError:  # pragma: no cover - Windows: last writer wins
    fcntl = None  # type: ignore[assignment]

DEFAULT_URL = "http://127.0.0.1:8000"
LOGIN_FILE = "login.json"


class InvalidServerURL(ValueError):
    """Not a URL a docintel client can talk to."""


def normalise_url(url: str) -> str:
    """One spelling per server, so that one server is one key.

    No scheme means `http://` (as httpie does; `:8000` is localhost:8000);
    scheme and host are lowercased, a default port and a trailing slash are
    dropped, a path prefix (a server behind a proxy) is kept. User info, a
    query or a fragment would make the same server several keys (or put a
    password in the file), so they are refused.
    """
    text = url.strip()
    if text.startswith(":"):
        text = "localhost" + text
    if "://" not in text:
        text = "http://" + text
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, TypeError):
        raise InvalidServerURL(url) from None
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.host
        or parsed.userinfo
        or parsed.query
        or parsed.fragment
        or (parsed.port is not None and not 0 < parsed.port < 65536)
    ):
        raise InvalidServerURL(url)
    return str(parsed).rstrip("/")


@dataclass
class Login:
    """Where to send requests, and with which token (None: not logged in)."""

    url: str = DEFAULT_URL
    token: str | None = None
    username: str | None = None
    issued_at: float | None = None  # epoch seconds, our clock; None when unknown
    expires_at: float | None = None
    #: from DOCINTEL_TOKEN: the user's own token, used as given and never stored
    explicit: bool = False

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= time.time()

    def entry(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "token": self.token,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
        }


@dataclass
class Logins:
    """The whole file: every server's login, and the default server."""

    default: str | None = None
    by_url: dict[str, Login] = field(default_factory=dict)


def cli_config_dir() -> Path:
    """Where the CLI keeps its logins; DOCINTEL_CONFIG_DIR moves it (tests do)."""
    override = os.environ.get("DOCINTEL_CONFIG_DIR")
    if override:
        return Path(override)
    from platformdirs import user_config_path  # not imported when it is not needed

    return user_config_path("docintel")


def login_path() -> Path:
    return cli_config_dir() / LOGIN_FILE


def read_logins() -> Logins:
    """The stored logins; a missing or unreadable file is no login at all."""
    try:
        raw = json.loads(login_path().read_text())
    except (OSError, ValueError):
        return Logins()
    if not isinstance(raw, dict):
        return Logins()
    if "logins" not in raw and isinstance(raw.get("url"), str):  # earlier versions' one slot
        raw = {"default": raw["url"], "logins": {raw["url"]: raw}}
    logins = Logins()
    entries = raw.get("logins")
    for url, entry in (entries if isinstance(entries, dict) else {}).items():
        try:
            key = normalise_url(str(url))
        except InvalidServerURL:
            continue
        if isinstance(entry, dict) and entry.get("token"):
            logins.by_url[key] = Login(
                url=key,
                token=str(entry["token"]),
                username=entry.get("username"),
                issued_at=_number(entry.get("issued_at")),
                expires_at=_number(entry.get("expires_at")),
            )
    default = raw.get("default")
    with contextlib.suppress(InvalidServerURL):  # a hand-edited file: no default then
        logins.default = normalise_url(default) if isinstance(default, str) and default else None
    return logins


def load_login(url: str | None = None) -> Login:
    """The login to use for `url` (from --url/DOCINTEL_URL), else for the default server.

    Raises InvalidServerURL. The token is the one stored for that very URL,
    or DOCINTEL_TOKEN when set; otherwise there is none.
    """
    logins = read_logins()
    target = url or os.environ.get("DOCINTEL_URL") or logins.default or DEFAULT_URL
    key = normalise_url(target)
    env_token = os.environ.get("DOCINTEL_TOKEN")
    if env_token:
        return Login(url=key, token=env_token, explicit=True)
    stored = logins.by_url.get(key)
    return stored if stored is not None else Login(url=key)


def save_login(login: Login, *, make_default: bool = True) -> Path:
    """Store `login` under its URL (the default server too, unless told otherwise)."""
    if login.explicit:
        raise ValueError("a DOCINTEL_TOKEN is never stored")
    with _locked():
        logins = read_logins()
        logins.by_url[login.url] = login
        if make_default or logins.default is None:
            logins.default = login.url
        return _write(logins)


def forget_login(url: str | None, *, everything: bool = False) -> list[str]:
    """Remove the login for `url` (default: the default server), or all; the URLs removed."""
    with _locked():
        logins = read_logins()
        if everything:
            gone = list(logins.by_url)
            login_path().unlink(missing_ok=True)
            return gone
        key = normalise_url(url or os.environ.get("DOCINTEL_URL") or logins.default or DEFAULT_URL)
        if logins.by_url.pop(key, None) is None:
            return []
        if logins.default == key:
            logins.default = None  # no guessing: the built-in default applies again
        _write(logins)
        return [key]


def _write(logins: Logins) -> Path:
    """Write the file with mode 0600 from the start (never world-readable), atomically."""
    path = login_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(
            {
                "default": logins.default,
                "logins": {url: login.entry() for url, login in logins.by_url.items()},
            },
            f,
            indent=2,
        )
    os.chmod(tmp, 0o600)  # in case the file existed with other bits
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Hold the login file's lock: a `watch` storing a refreshed token must not
    drop a login another terminal just made."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    directory = cli_config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / f".{LOGIN_FILE}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
