"""Settings: one object, read once from the environment (DOCINTEL_*).

Nothing reads the environment after this; the server, the workers and the CLI
all receive a `Settings`. Tests build one directly.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from platformdirs import user_data_path

from docintel.core.errors import DocintelError

DEFAULT_USERS = "demo:demo"
MIN_JWT_SECRET_BYTES = 32


class ConfigError(DocintelError):
    """A setting has an invalid value."""

    code = "invalid_setting"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=lambda: user_data_path("docintel"))
    # Unset: SQLite in the data dir. postgresql://…: PostgreSQL, shared by many processes.
    database_url: str = field(default="", repr=False)  # may hold a password
    # Seconds a worker's claim on a document lasts unless renewed (every third
    # of it); a document whose worker died is taken up again after this long.
    lease_seconds: float = 30.0
    host: str = "127.0.0.1"
    port: int = 8000
    users: Mapping[str, str] = field(default_factory=lambda: {"demo": "demo"}, repr=False)
    users_are_default: bool = True
    jwt_secret: str | None = field(default=None, repr=False)
    token_ttl: int = 3600
    analyzer: str = "auto"
    model: str = "gpt-4.1"
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_timeout: float = 60.0
    workers: int = 1
    max_upload_bytes: int = 10 * 1024 * 1024
    max_files_per_upload: int = 20
    # Extraction runs in a child process bounded by these (see README, Reliability).
    extract_timeout: float = 60.0
    extract_memory_mb: int = 1024
    max_pages: int = 2000
    max_text_chars: int = 2_000_000
    # A stream client that takes no data for this long is dropped (it can resume).
    stream_send_timeout: float = 30.0
    # Sent as `retry:` at the start of every stream: how soon clients reconnect.
    stream_retry_ms: int = 1000
    # Pages served from these origins may call the API (comma-separated); none by default.
    cors_origins: str = ""
    # Failed logins per minute (wrong passwords, and malformed or oversized logins):
    # per username from one client address, and per address whatever the username.
    # Never per username alone, which would let anyone lock a user out (README, Reliability).
    login_attempts_per_minute: int = 10
    login_attempts_per_address_per_minute: int = 30
    # Uploads per minute, per user.
    uploads_per_minute: int = 60
    # Resumable (tus) uploads not finished within this many seconds are removed.
    resumable_expiry: float = 86400.0
    # Text beyond this is sampled before it is sent to the LLM (see analysis/prompt.py).
    max_prompt_chars: int = 100_000
    # Seconds a document's status write is retried while the disk is full or the
    # database busy; then the document is requeued once writes work (core/workers.py).
    status_write_retry: float = 30.0
    # Connections and streams (server/connections.py, server/streamguard.py): a
    # request's headers must arrive within header_timeout seconds; its body may
    # pause at most body_timeout seconds and must average body_min_rate bytes/s
    # after its first body_timeout seconds. At most max_connections open at once
    # (fewer if the file-descriptor limit is lower), and at most max_streams event
    # streams, max_streams_per_user of them per user.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    body_min_rate: int = 500
    max_connections: int = 2048
    max_streams: int = 1000
    max_streams_per_user: int = 32

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read DOCINTEL_* (and OPENAI_*) variables; keyword overrides win (CLI flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in ("users", "users_are_default"):
                continue
            name = _env_name(f.name)
            if name in env and env[name] != "":
                values[f.name] = _coerce(f.name, env[name], f.type)
        raw_users = env.get("DOCINTEL_USERS", "")
        values["users"] = parse_users(raw_users or DEFAULT_USERS)
        values["users_are_default"] = not raw_users
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.analyzer not in ("auto", "openai", "offline"):
            raise ConfigError("DOCINTEL_ANALYZER must be one of auto, openai, offline.")
        if self.workers < 0:
            raise ConfigError("DOCINTEL_WORKERS must be 0 or more.")
        if self.workers == 0 and not self.database_url:
            raise ConfigError(
                "DOCINTEL_WORKERS=0 (the API only) needs DOCINTEL_DATABASE_URL: with the "
                "embedded database, this process is the only one that can run the workers."
            )
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ConfigError(f"The data dir {self.data_dir} is a file, not a folder.")
        if not 0 <= self.port <= 65535:
            raise ConfigError("DOCINTEL_PORT must be from 0 to 65535.")
        if self.max_upload_bytes < 1:
            raise ConfigError("DOCINTEL_MAX_UPLOAD_BYTES must be positive.")
        limits = (
            self.login_attempts_per_minute,
            self.login_attempts_per_address_per_minute,
            self.uploads_per_minute,
        )
        if min(limits) < 1:
            raise ConfigError("Rate limits must be at least 1 per minute.")
        if self.resumable_expiry <= 0:
            raise ConfigError("DOCINTEL_RESUMABLE_EXPIRY must be a positive number of seconds.")
        # An HS256 key shorter than its hash output can be guessed offline from any one
        # token (RFC 7518 §3.2); the generated key (data dir) is 64 characters.
        if self.jwt_secret and len(self.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise ConfigError(
                f"DOCINTEL_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes "
                f"(it has {len(self.jwt_secret.encode())}): leave it unset to use a key "
                "generated in the data dir, or make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`."
            )
        if not self.users:
            raise ConfigError("DOCINTEL_USERS names no user.")
        if self.lease_seconds < 1:
            raise ConfigError("DOCINTEL_LEASE_SECONDS must be at least 1.")
        if self.database_url and not is_postgres(self.database_url):
            raise ConfigError(
                "DOCINTEL_DATABASE_URL must be a postgresql:// URL "
                "(leave it unset for SQLite in the data dir)."
            )
        if self.database_url and not self.jwt_secret:
            # Every node signs and checks tokens: a key made in one node's data
            # dir would make the others refuse its tokens.
            raise ConfigError(
                "DOCINTEL_JWT_SECRET must be set with DOCINTEL_DATABASE_URL: every API node "
                "must sign tokens with the same key (make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`)."
            )
        if self.status_write_retry < 0:
            raise ConfigError("DOCINTEL_STATUS_WRITE_RETRY must be 0 or more seconds.")
        self._check_connection_limits()

    def _check_connection_limits(self) -> None:
        if self.header_timeout <= 0 or self.body_timeout <= 0:
            raise ConfigError("DOCINTEL_HEADER_TIMEOUT and DOCINTEL_BODY_TIMEOUT must be positive.")
        if self.body_min_rate < 0:
            raise ConfigError("DOCINTEL_BODY_MIN_RATE must be 0 (no minimum) or more.")
        if self.max_connections < 1:
            raise ConfigError("DOCINTEL_MAX_CONNECTIONS must be at least 1.")
        if self.max_streams < 1 or self.max_streams_per_user < 1:
            raise ConfigError(
                "DOCINTEL_MAX_STREAMS and DOCINTEL_MAX_STREAMS_PER_USER must be at least 1."
            )

    @property
    def analyzer_name(self) -> str:
        """The analyzer actually used: `auto` means openai only when a key is set."""
        if self.analyzer == "auto":
            return "openai" if self.openai_api_key else "offline"
        return self.analyzer

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def db_path(self) -> Path:
        return self.data_dir / "docintel.db"

    @property
    def database(self) -> str | Path:
        """What `db.connect` takes: the PostgreSQL URL, else the SQLite file."""
        return self.database_url or self.db_path

    @property
    def shared_database(self) -> bool:
        """Several processes may share the database (PostgreSQL)."""
        return bool(self.database_url)


def is_postgres(target: str | Path) -> bool:
    """Whether a database setting names PostgreSQL (else it is a SQLite file)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def _env_name(field_name: str) -> str:
    if field_name in ("openai_api_key", "openai_base_url"):
        return field_name.upper()
    return "DOCINTEL_" + field_name.upper()


def _coerce(name: str, raw: str, type_: Any) -> Any:
    kind = str(type_)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{_env_name(name)} must be a number, not {raw!r}.") from None
    if kind == "Path":
        return Path(raw).expanduser()
    return raw


def parse_users(raw: str) -> dict[str, str]:
    """`alice:pw1,bob:pw2` → {"alice": "pw1", "bob": "pw2"}; passwords may contain ':'."""
    users: dict[str, str] = {}
    for pair in raw.split(","):
        pair = pair.strip()
        if not pair:
            continue
        name, sep, password = pair.partition(":")
        if not sep or not name or not password:
            raise ConfigError("DOCINTEL_USERS must be comma-separated username:password pairs.")
        users[name] = password
    return users
