"""A real PostgreSQL server for the tests: a fresh database per test.

The server is the one at DOCINTEL_TEST_DATABASE_URL (default: this project's
machines' local server, `postgresql://postgres@127.0.0.1:5432/test`, trust
authentication); that database is only used to create and drop others. Each
test gets a database of its own, cloned from a template migrated once per
session (cloning takes tens of milliseconds, migrating every time would take
longer), and dropped after it, whatever connections a killed server left.

Without a server the PostgreSQL tests are skipped, saying why, except in CI
(`CI=true`, as `.ci/run` sets, or DOCINTEL_REQUIRE_POSTGRES=1): there a
missing server fails them, so they are never skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

ADMIN_URL = os.environ.get(
    "DOCINTEL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRED = os.environ.get("CI") == "true" or os.environ.get("DOCINTEL_REQUIRE_POSTGRES") == "1"
# Every node of a cluster signs tokens with the same key.
SECRET = "test-secret-that-is-at-least-32-bytes-long"


def url_for(database: str) -> str:
    """ADMIN_URL with another database name."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


def admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)


class PostgresServer:
    def __init__(self) -> None:
        self.template = f"docintel_tpl_{os.getpid()}"

    def prepare(self) -> None:
        from docintel.core import db

        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.template}"')
        db.connect(url_for(self.template))
        db.database.close()

    def create(self) -> str:
        name = f"docintel_t_{uuid.uuid4().hex[:12]}"
        with admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return url_for(name)

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def finish(self) -> None:
        with contextlib.suppress(psycopg.Error), admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    try:
        with admin() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = f"no PostgreSQL at {ADMIN_URL}: {str(exc).strip()}; set DOCINTEL_TEST_DATABASE_URL"
        if REQUIRED:
            pytest.fail(reason + " (CI requires it)")
        pytest.skip(reason)
    server = PostgresServer()
    server.prepare()
    yield server
    server.finish()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test, dropped after it."""
    url = postgres.create()
    yield url
    postgres.drop(url)


class WorkerProcess:
    """`docintel worker` in a process of its own, logging to a file."""

    def __init__(self, data_dir: Path, env: dict[str, str], name: str) -> None:
        self.log_path = data_dir.parent / f"worker-{name}.log"
        full_env = {**os.environ, "DOCINTEL_JWT_SECRET": SECRET, **env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "docintel", "worker", "--data-dir", str(data_dir)],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while "at a time, leases of" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(20)
        return self.proc.returncode
