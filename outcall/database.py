"""The database: an async SQLAlchemy engine, sessions, and Alembic migrations applied at start.

`DATABASE_URL` picks the engine: an embedded SQLite file by default (created on first start),
or `postgresql+asyncpg://…` so several server instances share state.

Every database operation runs to its end (`@uninterrupted`). Cancelling a task in the middle of
a statement is what once hung the server: the statement kept running in aiosqlite's worker
thread, SQLAlchemy invalidated the connection on the CancelledError and closed it while a
SELECT was still open on it, and SQLite keeps such a connection as a "zombie" that holds its
write lock until the statement is finalised, whenever the garbage collector gets to it. Every
later writer then waited on SQLite's lock while holding the server's writer queue: a call's
record that never ended, a dialer stopped for the whole process. Tasks are cancelled all the
time here (a callee hangs up mid-report, a newer report supersedes one in flight, shutdown), so
the rule is structural: an operation runs in a task of its own that no caller can cancel, and
`write()`/`session()` refuse to open outside one.

Operators who run migrations themselves:

    uv run python -m outcall.database upgrade
"""

import asyncio
import functools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from loguru import logger
from sqlalchemy import DateTime, Insert, Select, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.types import TypeDecorator

from outcall.values import utcnow  # noqa: F401 (re-exported: the stores' time)

SQLITE_BUSY_TIMEOUT_SECS = 10  # another process (the CLI) holding SQLite's write lock
POSTGRES_STATEMENT_TIMEOUT_SECS = 30
WRITER_QUEUE_TIMEOUT_SECS = 30  # waiting for this process's SQLite writer slot
CLOSE_TIMEOUT_SECS = 10  # operations still running when the server stops
BULK_CACHE_MB = 64  # SQLite's page cache for a bulk write (see BulkWriter)
BULK_WAL_PAGES = 30_000  # …and how far its WAL grows between checkpoints (117 MB)

_operation: ContextVar[asyncio.Task | None] = ContextVar("outcall_database_operation", default=None)
_running: set[asyncio.Task] = set()
_abandoned: set[asyncio.Task] = set()


class DatabaseBusy(Exception):
    """This process's SQLite writer slot stayed taken longer than WRITER_QUEUE_TIMEOUT_SECS."""


P = ParamSpec("P")
T = TypeVar("T")


def uninterrupted(operation: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run a database operation in a task of its own, so it always ends with a commit or a
    rollback: a caller that is cancelled stops waiting, the operation does not stop midway.
    (See the module docstring for what cancelling one midway did.) Nested calls run inline."""

    @functools.wraps(operation)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        if _operation.get() is asyncio.current_task():
            return await operation(*args, **kwargs)
        task = asyncio.create_task(_as_operation(operation(*args, **kwargs)))
        _running.add(task)
        task.add_done_callback(_finished)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            _abandoned.add(task)  # the caller stopped waiting; the operation goes on to its end
            raise

    return run


async def _as_operation(work: Awaitable[T]) -> T:
    _operation.set(asyncio.current_task())
    return await work


def _finished(task: asyncio.Task) -> None:
    _running.discard(task)
    if task in _abandoned:
        _abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).warning("A database operation failed after its caller stopped waiting")


def _require_operation() -> None:
    if _operation.get() is not asyncio.current_task():
        raise RuntimeError("database sessions are opened only inside an @uninterrupted operation")


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every engine (SQLite keeps no zone of its own)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect):
        return value.replace(tzinfo=UTC) if value is not None else None


def for_update(session: AsyncSession, query: Select, skip_locked: bool = False) -> Select:
    """`query` taking row locks on PostgreSQL (skipping rows another instance holds, if asked).
    SQLite has no row locks; there `Database.write` queues the writers instead."""
    if session.bind.dialect.name != "postgresql":
        return query
    return query.with_for_update(skip_locked=skip_locked)


def insert_ignoring_duplicates(dialect_name: str, table) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING, on either engine."""
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing()


def create_engine(url: str) -> AsyncEngine:
    """An engine for `url`; SQLite gets WAL and a busy timeout so readers never block the writer."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECS})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(
        url, pool_pre_ping=True, pool_timeout=30, connect_args={"command_timeout": POSTGRES_STATEMENT_TIMEOUT_SECS, "timeout": 10}
    )


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("outcall") / "migrations"))
    return config


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class Database:
    """One engine and its session factory, shared by the whole server process."""

    def __init__(self, url: str):
        self.url = url
        self.engine = create_engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite allows one writer; queueing writers here avoids its "database is locked" errors.
        # PostgreSQL takes row locks instead (SELECT … FOR UPDATE), across instances.
        self._sqlite_writer = asyncio.Lock() if self.engine.dialect.name == "sqlite" else None

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    async def migrate(self) -> None:
        """Bring the schema to the newest migration; safe to run from several instances at once."""
        async with self.engine.begin() as connection:
            if self.is_postgresql:
                # One instance migrates; the others wait here, then find nothing to do.
                await connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7460616)")
            await connection.run_sync(_upgrade)

    def session(self) -> AsyncSession:
        """A session for reading, inside an @uninterrupted operation."""
        _require_operation()
        return self.sessions()

    @asynccontextmanager
    async def write(self, connection: AsyncConnection | None = None) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed when the block ends without error; inside an
        @uninterrupted operation. On `connection` if given (a BulkWriter's), else a pooled one."""
        _require_operation()
        bind = {"bind": connection} if connection else {}
        if self._sqlite_writer:
            try:
                async with asyncio.timeout(WRITER_QUEUE_TIMEOUT_SECS):
                    await self._sqlite_writer.acquire()
            except TimeoutError:
                raise DatabaseBusy(f"the database stayed busy for {WRITER_QUEUE_TIMEOUT_SECS} s; try again")
            try:
                async with self.sessions(**bind) as session, session.begin():
                    yield session
            finally:
                self._sqlite_writer.release()
        else:
            async with self.sessions(**bind) as session, session.begin():
                yield session

    async def close(self) -> None:
        """Let operations still running finish (bounded), then close every connection."""
        loop = asyncio.get_running_loop()
        running = {task for task in _running if task.get_loop() is loop}
        if running:
            _, pending = await asyncio.wait(running, timeout=CLOSE_TIMEOUT_SECS)
            if pending:
                logger.error(f"{len(pending)} database operations still running after {CLOSE_TIMEOUT_SECS} s; closing anyway")
        await self.engine.dispose()


class BulkWriter:
    """The transactions of one bulk write (a contact import), each queued with the process's other
    writers as `Database.write` queues them.

    On SQLite they share a connection of their own. Its page cache (BULK_CACHE_MB, against
    SQLite's 2 MB) holds the pages a transaction dirties: rows go into a large campaign's unique
    index in random order, and with the default cache those pages spilled to the WAL and were
    read back mid-transaction. And the WAL is checkpointed every BULK_WAL_PAGES rather than after
    each commit, so a page rewritten by several transactions is copied into the database once.
    `close` checkpoints what is left (so no later writer pays for it) and discards the connection,
    cache and settings with it. On PostgreSQL each transaction takes a pooled connection."""

    def __init__(self, database: Database):
        self.database = database
        self._connection: AsyncConnection | None = None
        self._in_use = asyncio.Lock()  # `close` waits for a transaction a cancelled caller left running

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """Database.write, on this bulk write's connection; inside an @uninterrupted operation."""
        async with self._in_use:
            if self.database.is_postgresql:
                async with self.database.write() as session:
                    yield session
                return
            if self._connection is None:
                self._connection = await self.database.engine.connect()
                await self._connection.exec_driver_sql(f"PRAGMA cache_size=-{BULK_CACHE_MB * 1024}")
                await self._connection.exec_driver_sql(f"PRAGMA wal_autocheckpoint={BULK_WAL_PAGES}")
                await self._connection.commit()  # so each session below begins (and commits) its own
            async with self.database.write(self._connection) as session:
                yield session

    @uninterrupted
    async def close(self) -> None:
        async with self._in_use:
            if self._connection is None:
                return
            connection, self._connection = self._connection, None
            try:
                await connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                await connection.invalidate()  # not back to the pool with these settings
                await connection.close()


async def _main(argv: list[str]) -> int:
    from outcall.settings import Settings

    if argv != ["upgrade"]:
        print("usage: python -m outcall.database upgrade", file=sys.stderr)
        return 2
    database = Database(Settings().database_url)
    await database.migrate()
    await database.close()
    print(f"Database at {make_url(database.url).render_as_string(hide_password=True)} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))
