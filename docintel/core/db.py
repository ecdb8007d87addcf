"""The SQLite database: deferred peewee handle, pragmas, ordered migrations.

All database work of the running service goes through one `Database` runner:
a single thread owns the connection, so writes never contend, commits happen
in id order (the event log's ids are therefore seen in order by readers), and
the event loop never blocks on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import peewee

log = logging.getLogger(__name__)
T = TypeVar("T")

PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "foreign_keys": 1,
    "busy_timeout": 5000,
}


class _SqliteDatabase(peewee.SqliteDatabase):
    def rollback(self) -> None:
        # SQLite ends the transaction by itself on some errors (SQLITE_FULL: the
        # disk is full); the ROLLBACK peewee then sends fails with "no transaction
        # is active", and that error would replace the one that says why.
        if not self.is_closed() and not self.connection().in_transaction:  # type: ignore[no-untyped-call]
            return
        super().rollback()


# Deferred: bound to a file by `connect()`; models in models.py use it.
database = _SqliteDatabase(None)


def utcnow() -> str:
    """ISO 8601 UTC with milliseconds; sorts as text."""
    return utc_in(0)


def utc_in(seconds: float) -> str:
    """The time `seconds` from now, as `utcnow` writes it."""
    at = datetime.now(UTC) + timedelta(seconds=seconds)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_until(at: str) -> float:
    """Seconds from now until a time `utcnow` wrote (negative once it has passed)."""
    return (datetime.fromisoformat(at) - datetime.now(UTC)).total_seconds()


def connect(path: Path) -> None:
    """Point the deferred database at `path` (created if missing) and migrate it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    database.init(str(path), pragmas=PRAGMAS)
    database.connect(reuse_if_open=True)
    migrate()


def execute(sql: str, params: tuple[Any, ...] = ()) -> Any:
    """Raw SQL on the database (peewee's own method has no type hints)."""
    return database.execute_sql(sql, params)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def recorded_queries() -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Collects (sql, params) of every query peewee runs in the block, on any thread."""
    recorded: list[tuple[str, tuple[Any, ...]]] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if isinstance(record.msg, tuple) and len(record.msg) == 2:
                sql, params = record.msg
                recorded.append((sql, tuple(params or ())))

    peewee_log = logging.getLogger("peewee")
    handler, level = Recorder(logging.DEBUG), peewee_log.level
    peewee_log.addHandler(handler)
    peewee_log.setLevel(logging.DEBUG)
    try:
        yield recorded
    finally:
        peewee_log.removeHandler(handler)
        peewee_log.setLevel(level)


def explain(sql: str, params: tuple[Any, ...] = ()) -> list[str]:
    """SQLite's `EXPLAIN QUERY PLAN` of a query, one line per step (empty for an INSERT)."""
    if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
        return []
    return [row[3] for row in execute("EXPLAIN QUERY PLAN " + sql, params)]


# "SCAN document" or "SCAN d" reads the whole table; "SCAN … USING [COVERING] INDEX"
# walks an index in order, and a SCAN of a subquery or a list is not a table scan.
_FULL_SCAN = re.compile(r"^SCAN (?!.*\bUSING\b)(?!\(|CONSTANT|SUBQUERY|LIST)")


def is_full_scan(plan_line: str) -> bool:
    return bool(_FULL_SCAN.match(plan_line.strip()))


def execute_many(sql: str, rows: list[tuple[Any, ...]]) -> None:
    """One statement for each row of parameters (a single call into sqlite3)."""
    database.cursor().executemany(sql, rows)  # type: ignore[no-untyped-call]


def migrate() -> None:
    execute(
        "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in execute("SELECT name FROM migrations")}
    for migration in MIGRATIONS:
        if migration.__name__ in done:
            continue
        with database.atomic():
            migration()
            execute(
                "INSERT INTO migrations (name, applied_at) VALUES (?, ?)",
                (migration.__name__, utcnow()),
            )
        log.info("applied migration %s", migration.__name__)


def m001_initial() -> None:
    # AUTOINCREMENT, not plain rowid: ids of deleted rows are never reused, so
    # the queue stays strictly FIFO and event ids stay monotonic for
    # Last-Event-ID even after the newest document is deleted.
    statements = [
        """CREATE TABLE document (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            owner TEXT NOT NULL,
            filename TEXT NOT NULL,
            stored_name TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            content_type TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            status TEXT NOT NULL,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX document_owner_seq ON document (owner, seq)",
        "CREATE INDEX document_status_seq ON document (status, seq)",
        """CREATE TABLE status_event (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            document_id TEXT NOT NULL REFERENCES document (id) ON DELETE CASCADE,
            owner TEXT NOT NULL,
            status TEXT NOT NULL,
            at TEXT NOT NULL,
            detail TEXT
        )""",
        "CREATE INDEX status_event_document ON status_event (document_id, id)",
        "CREATE INDEX status_event_owner ON status_event (owner, id)",
        """CREATE TABLE analysis (
            document_id TEXT PRIMARY KEY REFERENCES document (id) ON DELETE CASCADE,
            summary TEXT NOT NULL,
            key_topics TEXT NOT NULL,
            sentiment TEXT NOT NULL,
            action_items TEXT NOT NULL,
            analyzer TEXT NOT NULL,
            model TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
    ]
    for sql in statements:
        execute(sql)


def m002_document_owner_id() -> None:
    # Every lookup by id is scoped to its owner and may be a prefix of the id
    # (`service._owned`): a range scan of this index, whatever else the user owns.
    execute("CREATE INDEX document_owner_id ON document (owner, id)")


def m003_document_owner_status_seq() -> None:
    # The list filtered by status (`service.list_documents`): its page is the
    # newest `seq` of one owner's documents in those statuses, its total a count
    # of them. (status, seq) finds every user's documents in a status and
    # filters by owner row by row; (owner, status, seq) goes straight to this
    # user's, and the count reads the index alone. (status, seq) stays: the
    # queue claims the oldest pending document of any owner.
    execute("CREATE INDEX document_owner_status_seq ON document (owner, status, seq)")
    # Statistics gathered before this index existed would leave the planner
    # without any for it (and it then chose it even where it forces a sort).
    if list(execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'")):
        execute("ANALYZE document_owner_status_seq")


def m004_document_count() -> None:
    # The list's total: counting the matching index entries grows with them
    # (2-6 ms for 23k of one user's 33k documents at 100k, more for a user who
    # owns them all). Triggers keep a count per (owner, status) instead, so a
    # total is a sum of at most five rows whatever the size. Every insert,
    # delete and status change of a document already touches the table: the
    # triggers add one small write to it, in the same transaction.
    statements = [
        """CREATE TABLE document_count (
            owner TEXT NOT NULL,
            status TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (owner, status)
        ) WITHOUT ROWID""",
        """INSERT INTO document_count (owner, status, n)
            SELECT owner, status, COUNT(*) FROM document GROUP BY owner, status""",
        """CREATE TRIGGER document_count_insert AFTER INSERT ON document BEGIN
            INSERT INTO document_count (owner, status, n) VALUES (NEW.owner, NEW.status, 1)
                ON CONFLICT (owner, status) DO UPDATE SET n = n + 1;
        END""",
        """CREATE TRIGGER document_count_delete AFTER DELETE ON document BEGIN
            UPDATE document_count SET n = n - 1 WHERE owner = OLD.owner AND status = OLD.status;
        END""",
        """CREATE TRIGGER document_count_update AFTER UPDATE OF owner, status ON document
            WHEN NEW.owner IS NOT OLD.owner OR NEW.status IS NOT OLD.status BEGIN
            UPDATE document_count SET n = n - 1 WHERE owner = OLD.owner AND status = OLD.status;
            INSERT INTO document_count (owner, status, n) VALUES (NEW.owner, NEW.status, 1)
                ON CONFLICT (owner, status) DO UPDATE SET n = n + 1;
        END""",
    ]
    for sql in statements:
        execute(sql)


def m005_document_backoff() -> None:
    # A document requeued for a passing cause (a full disk, no file descriptors
    # left, a busy database) is not claimed again before `not_before` (UTC ISO
    # text, like every time here; NULL: at once), so it cannot hot-loop while the
    # shortage lasts. `requeues` counts such requeues to lengthen the wait.
    execute("ALTER TABLE document ADD COLUMN not_before TEXT")
    execute("ALTER TABLE document ADD COLUMN requeues INTEGER NOT NULL DEFAULT 0")


MIGRATIONS: list[Callable[[], None]] = [
    m001_initial,
    m002_document_owner_id,
    m003_document_owner_status_seq,
    m004_document_count,
    m005_document_backoff,
]


class Database:
    """Runs database functions on the one thread that owns the connection.

    `run` is for reads. `write` is for changes: once the function has returned
    (its transaction committed) it calls every `on_commit` callback, so those
    who wait for new events or new work (the event feed, the workers) are woken
    without any call site having to remember to.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="docintel-db")
        self.on_commit: list[Callable[[], None]] = []

    async def open(self) -> None:
        await self.run(connect, self.path)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await self.run(fn, *args, **kwargs)
        finally:
            # Also after a failure: a write function may commit, then raise.
            for callback in self.on_commit:
                callback()

    async def close(self) -> None:
        await self.run(database.close)
        self._executor.shutdown(wait=True)
