"""The database: an async SQLAlchemy engine, sessions, and Alembic migrations applied at start.

`DATABASE_URL` picks the engine: an embedded SQLite file by default (created on first start),
or `postgresql+asyncpg://…` so several server instances share state.

Operators who run migrations themselves:

    uv run python -m outcall.database upgrade
"""

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import DateTime, Insert, Select, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.types import TypeDecorator


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


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_engine(url: str) -> AsyncEngine:
    """An engine for `url`; SQLite gets WAL and a busy timeout so readers never block the writer."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True)


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
        """A session for reading."""
        return self.sessions()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed when the block ends without error."""
        if self._sqlite_writer:
            async with self._sqlite_writer, self.sessions() as session, session.begin():
                yield session
        else:
            async with self.sessions() as session, session.begin():
                yield session

    async def close(self) -> None:
        await self.engine.dispose()


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
