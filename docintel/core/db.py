"""The database: SQLite in the data dir, or PostgreSQL; one handle, ordered migrations.

`DOCINTEL_DATABASE_URL` chooses: unset, SQLite in the data dir (one process
owns it); `postgresql://…`, PostgreSQL through peewee and psycopg 3, shared by
any number of API and worker processes. The same numbered migrations build
both schemas; where the SQL differs, `dialect()` says which to write.

All database work of a process goes through one `Database` runner: a single
thread owns the connection, so the event loop never blocks on the database.
On SQLite that thread is the only writer, so commits happen in id order; on
PostgreSQL, writers of the event log take one transaction-scoped advisory lock
first (queue.py), with the same effect across processes.
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

from docintel.core.config import is_postgres

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


class _PostgresDatabase(peewee.PostgresqlDatabase):
    """psycopg 3 (peewee picks it when asked; psycopg2 is never needed)."""


# Bound by `connect()` to SQLite or PostgreSQL; models in models.py use it.
database = peewee.DatabaseProxy()
POSTGRES = "postgresql"
SQLITE = "sqlite"
_dialect = SQLITE


def dialect() -> str:
    """`sqlite` or `postgresql`: which SQL the connected database speaks."""
    return _dialect


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


def connect(target: str | Path) -> None:
    """Bind the database to a SQLite file (created if missing) or a PostgreSQL URL; migrate."""
    global _dialect
    if is_postgres(target):
        url = str(target)
        _dialect = POSTGRES
        # Autocommit outside `atomic()`; TCP keepalives find a peer that vanished.
        database.initialize(
            _PostgresDatabase(
                url,
                prefer_psycopg3=True,
                connect_timeout=10,
                # A peer that vanished (a frozen VM, a cut network) is noticed
                # within a minute, not the system's two hours.
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
                # A node that stalls inside a transaction must not hold the event
                # log's lock (and so every node's writes) for long.
                options="-c idle_in_transaction_session_timeout=15000 -c lock_timeout=30000",
            )
        )
    else:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        _dialect = SQLITE
        database.initialize(_SqliteDatabase(str(path), pragmas=PRAGMAS))
    database.connect(reuse_if_open=True)
    migrate()


def describe(target: str | Path) -> str:
    """Where the data is, for logs: a PostgreSQL URL without its password."""
    if not is_postgres(target):
        return str(target)
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(str(target))
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + host
    netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@functools.lru_cache(maxsize=256)
def _postgres_sql(sql: str) -> str:
    # Our raw SQL is written with SQLite's `?`; psycopg takes `%s`. No raw SQL
    # here contains a literal `?` or `%` (a test checks the statements).
    return sql.replace("?", "%s")


def execute(sql: str, params: tuple[Any, ...] = ()) -> Any:
    """Raw SQL on the database (written with `?` placeholders, for either backend)."""
    if _dialect == POSTGRES:
        sql = _postgres_sql(sql)
    return database.execute_sql(sql, params)


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
    """One statement for each row of parameters (one call into the driver)."""
    if _dialect == POSTGRES:
        sql = _postgres_sql(sql)
    database.cursor().executemany(sql, rows)


# Transaction-scoped advisory lock keys (PostgreSQL): one per purpose.
MIGRATE_LOCK = 0x646F6331  # "doc1": one process migrates at a time
LOG_LOCK = 0x646F6332  # "doc2": event-log appends commit in id order (queue.py)
NOTIFY_CHANNEL = "docintel_events"  # a commit appended events (listener.py)


def migrate() -> None:
    """Apply the migrations not applied yet, each in its own transaction.

    On PostgreSQL many processes may start at once: the whole run holds an
    advisory lock, so each migration is applied once and the others see it done.
    """
    with database.atomic():
        if _dialect == POSTGRES:
            execute("SELECT pg_advisory_xact_lock(?)", (MIGRATE_LOCK,))
        execute(
            "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {row[0] for row in execute("SELECT name FROM migrations")}
        for migration in MIGRATIONS:
            if migration.__name__ in done:
                continue
            with database.atomic():  # a savepoint: one migration, whole or not at all
                migration()
                execute(
                    "INSERT INTO migrations (name, applied_at) VALUES (?, ?)",
                    (migration.__name__, utcnow()),
                )
            log.info("applied migration %s", migration.__name__)


def _types() -> dict[str, str]:
    """The column types m001 writes, per dialect."""
    if _dialect == POSTGRES:
        # Identity keys are never reused, as AUTOINCREMENT; CACHE 1 (the default)
        # hands them out in order, which the event log's lock relies on. Ids and
        # owners compare byte by byte ("C"), as SQLite's TEXT does: id-prefix
        # ranges and orderings mean the same on both.
        return {
            "pk": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
            "key": 'TEXT COLLATE "C"',
            "bigint": "BIGINT",
            "json": "JSONB",
        }
    return {
        "pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "key": "TEXT",
        "bigint": "INTEGER",
        "json": "TEXT",
    }


def m001_initial() -> None:
    # AUTOINCREMENT (an identity on PostgreSQL), not plain rowid: ids of deleted
    # rows are never reused, so the queue stays strictly FIFO and event ids stay
    # monotonic for Last-Event-ID even after the newest document is deleted.
    t = _types()
    statements = [
        f"""CREATE TABLE document (
            seq {t["pk"]},
            id {t["key"]} NOT NULL UNIQUE,
            owner {t["key"]} NOT NULL,
            filename TEXT NOT NULL,
            stored_name TEXT NOT NULL,
            size_bytes {t["bigint"]} NOT NULL,
            content_type TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            status {t["key"]} NOT NULL,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX document_owner_seq ON document (owner, seq)",
        "CREATE INDEX document_status_seq ON document (status, seq)",
        f"""CREATE TABLE status_event (
            id {t["pk"]},
            document_id {t["key"]} NOT NULL REFERENCES document (id) ON DELETE CASCADE,
            owner {t["key"]} NOT NULL,
            status {t["key"]} NOT NULL,
            at TEXT NOT NULL,
            detail TEXT
        )""",
        "CREATE INDEX status_event_document ON status_event (document_id, id)",
        "CREATE INDEX status_event_owner ON status_event (owner, id)",
        f"""CREATE TABLE analysis (
            document_id {t["key"]} PRIMARY KEY REFERENCES document (id) ON DELETE CASCADE,
            summary TEXT NOT NULL,
            key_topics {t["json"]} NOT NULL,
            sentiment TEXT NOT NULL,
            action_items {t["json"]} NOT NULL,
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
    # (PostgreSQL's autovacuum gathers its own.)
    if _dialect == SQLITE and list(
        execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'")
    ):
        execute("ANALYZE document_owner_status_seq")


def m004_document_count() -> None:
    # The list's total: counting the matching index entries grows with them
    # (2-6 ms for 23k of one user's 33k documents at 100k, more for a user who
    # owns them all). Triggers keep a count per (owner, status) instead, so a
    # total is a sum of at most five rows whatever the size. Every insert,
    # delete and status change of a document already touches the table: the
    # triggers add one small write to it, in the same transaction.
    if _dialect == POSTGRES:
        _m004_postgres()
        return
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


def _m004_postgres() -> None:
    statements = [
        """CREATE TABLE document_count (
            owner TEXT COLLATE "C" NOT NULL,
            status TEXT COLLATE "C" NOT NULL,
            n BIGINT NOT NULL,
            PRIMARY KEY (owner, status)
        )""",
        """INSERT INTO document_count (owner, status, n)
            SELECT owner, status, COUNT(*) FROM document GROUP BY owner, status""",
        """CREATE FUNCTION document_count_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('DELETE', 'UPDATE') THEN
                UPDATE document_count SET n = n - 1
                    WHERE owner = OLD.owner AND status = OLD.status;
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                INSERT INTO document_count (owner, status, n) VALUES (NEW.owner, NEW.status, 1)
                    ON CONFLICT (owner, status) DO UPDATE SET n = document_count.n + 1;
            END IF;
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER document_count_insert_delete AFTER INSERT OR DELETE ON document
            FOR EACH ROW EXECUTE FUNCTION document_count_change()""",
        """CREATE TRIGGER document_count_update AFTER UPDATE OF owner, status ON document
            FOR EACH ROW WHEN (NEW.owner IS DISTINCT FROM OLD.owner
                               OR NEW.status IS DISTINCT FROM OLD.status)
            EXECUTE FUNCTION document_count_change()""",
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


def now_epoch() -> str:
    """SQL for the database's clock, in epoch seconds.

    Leases are set and judged by the database's clock, never a node's own, so
    clock skew between nodes cannot expire a lease early or keep a dead one.
    """
    if _dialect == POSTGRES:
        return "extract(epoch FROM clock_timestamp())::double precision"
    return "((julianday('now') - 2440587.5) * 86400.0)"


def m006_document_lease() -> None:
    # A claimed document carries a lease: which worker runs it, and until when
    # (epoch seconds, the database's clock). The worker renews it while it
    # runs; any worker puts a document whose lease expired back in the queue.
    real = "DOUBLE PRECISION" if _dialect == POSTGRES else "REAL"
    execute("ALTER TABLE document ADD COLUMN lease_owner TEXT")
    execute(f"ALTER TABLE document ADD COLUMN lease_until {real}")
    execute("CREATE INDEX document_lease ON document (lease_until) WHERE lease_until IS NOT NULL")
    if _dialect != POSTGRES:
        return
    statements = [
        # The event log's lock (queue._log_write), also for an insert that forgot
        # it: taken before the identity hands out the id (re-entrant when held).
        f"""CREATE FUNCTION status_event_lock() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock({LOG_LOCK});
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER status_event_lock BEFORE INSERT ON status_event
            FOR EACH STATEMENT EXECUTE FUNCTION status_event_lock()""",
        # Every commit that appends events wakes every process (listener.py):
        # NOTIFY is delivered at commit, and not at all on rollback.
        f"""CREATE FUNCTION status_event_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER status_event_notify AFTER INSERT ON status_event
            FOR EACH STATEMENT EXECUTE FUNCTION status_event_notify()""",
    ]
    for sql in statements:
        execute(sql)


def m007_rate_limit() -> None:
    # Rate limits shared by every API node (ratelimit.SharedLimiter; PostgreSQL).
    real = "DOUBLE PRECISION" if _dialect == POSTGRES else "REAL"
    execute(
        f"""CREATE TABLE rate_limit (
            key TEXT PRIMARY KEY,
            tokens {real} NOT NULL,
            updated {real} NOT NULL
        )"""
    )


MIGRATIONS: list[Callable[[], None]] = [
    m001_initial,
    m002_document_owner_id,
    m003_document_owner_status_seq,
    m004_document_count,
    m005_document_backoff,
    m006_document_lease,
    m007_rate_limit,
]


def _reconnecting(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn`; if the server dropped the connection, forget it so the next call reconnects.

    peewee does not notice a PostgreSQL connection that the server ended (a
    restart, a failover): every later statement would fail on it for good.
    The call that met the loss still fails (it may have been a write that
    committed or not); the next one opens a new connection.
    """
    try:
        return fn(*args, **kwargs)
    except Exception:
        if _dialect == POSTGRES and not database.is_closed():
            raw = database.connection()
            if getattr(raw, "closed", False) or getattr(raw, "broken", False):
                log.warning("the connection to PostgreSQL was lost; reconnecting")
                with contextlib.suppress(Exception):
                    raw.close()
                database.dispose()
        raise


def ping() -> None:
    """A round trip to the database (for /healthz)."""
    execute("SELECT 1").fetchall()


class Database:
    """Runs database functions on the one thread that owns the connection.

    `run` is for reads. `write` is for changes: once the function has returned
    (its transaction committed) it calls every `on_commit` callback, so those
    who wait for new events or new work (the event feed, the workers) are woken
    without any call site having to remember to.
    """

    def __init__(self, target: str | Path) -> None:
        self.target = target  # a SQLite file, or a PostgreSQL URL
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="docintel-db")
        self.on_commit: list[Callable[[], None]] = []

    async def open(self) -> None:
        await self.run(connect, self.target)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(_reconnecting, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

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
