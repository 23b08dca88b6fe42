"""Importing a campaign's contacts from a CSV file, streamed, in bounded memory.

Rows are read and checked by outcall/contact_file.py (in a thread, while the rows before them
are stored), then stored here in groups, each its own transaction, so memory stays flat for any
file size: on PostgreSQL by COPY, on SQLite by multi-row INSERTs. Duplicates within the file
and the campaign, and numbers on the do-not-call list, are reported per row like any other bad
row.
"""

import asyncio
import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from outcall.agents import AgentProfile, script_with_agent
from outcall.campaigns import CampaignSettings
from outcall.contact_file import BATCH_ROWS, ContactFile, ContactRow, FileOptions, RowError
from outcall.database import BulkWriter, Database, uninterrupted
from outcall.models import Agent, Campaign, Contact, ContactState

BATCHES_PER_TRANSACTION = 5
REPORTED_ERRORS = 1000  # kept in ImportResult; every error also goes to `on_error`


@dataclass
class ImportResult:
    imported: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)  # the first REPORTED_ERRORS

    @property
    def errors_truncated(self) -> bool:
        return self.rejected > len(self.errors)


class ContactImport:
    """One import of one CSV file into one campaign."""

    def __init__(
        self,
        database: Database,
        campaign: Campaign,
        path: str | Path,
        *,
        now: datetime,
        phone_column: str | None = None,
        timezone_column: str | None = None,
        encoding: str | None = None,
        on_error: Callable[[RowError], None] = lambda error: None,
        on_progress: Callable[[int], None] = lambda bytes_read: None,
    ):
        settings = CampaignSettings.model_validate(campaign.settings)
        self.settings = settings
        self.database = database
        self.campaign_id = campaign.id
        self.path = str(path)
        self.now = now
        self.options = FileOptions(
            campaign_timezone=settings.timezone,
            default_country=settings.default_country,
            phone_column=phone_column,
            timezone_column=timezone_column,
            encoding=encoding,
            needed_columns=frozenset(settings.placeholders() - set(settings.variables)),
        )
        self.on_error = on_error
        self.on_progress = on_progress
        self.result = ImportResult()
        self._writer = BulkWriter(database)
        self._all_new_so_far = True  # no number met so far that the campaign already has

    async def run(self) -> ImportResult:
        """Import every good row; ImportRefused (before anything is stored) if the file cannot be
        read, or lacks a column the campaign's (or its agent's) templates need."""
        if self.settings.agent_id:
            await self._need_agents_placeholders()
        with open(self.path, "rb") as source:
            contacts = ContactFile(source, self.options)
            batches = contacts.batches()

            def read_group() -> tuple[list, int]:
                return list(itertools.islice(batches, BATCHES_PER_TRANSACTION)), contacts.bytes_read

            # Checking the next rows (in a thread) overlaps storing the last ones.
            reading = asyncio.ensure_future(asyncio.to_thread(read_group))
            try:
                while True:
                    group, bytes_read = await reading
                    if not group:
                        return self.result
                    reading = asyncio.ensure_future(asyncio.to_thread(read_group))
                    try:
                        await self._store(group)
                    except BaseException:
                        await asyncio.gather(reading, return_exceptions=True)  # the thread still reads the file
                        raise
                    self.on_progress(bytes_read)
            finally:
                await self._writer.close()

    @uninterrupted
    async def _need_agents_placeholders(self) -> None:
        """The campaign runs an agent: the columns its templates use are needed too (as the
        agent's current version has them; one changed later is checked at each dial)."""
        async with self.database.session() as session:
            agent = await session.get(Agent, self.settings.agent_id)
        if agent is not None:
            script = script_with_agent(AgentProfile.model_validate(agent.profile), self.settings)
            self.options = dataclasses.replace(
                self.options, needed_columns=frozenset(script.placeholders() - set(script.variables))
            )

    def _reject(self, error: RowError) -> None:
        self.result.rejected += 1
        if len(self.result.errors) < REPORTED_ERRORS:
            self.result.errors.append(error)
        self.on_error(error)

    @uninterrupted
    async def _store(self, group: list[tuple[list[ContactRow], list[RowError]]]) -> None:
        """Store a group of batches in one transaction (fewer commits, each one durable)."""
        unique: dict[str, ContactRow] = {}
        for rows, errors in group:
            for error in errors:
                self._reject(error)
            for row in rows:
                if row.phone in unique:
                    self._reject(RowError(row.line, row.phone, f"duplicate of row {unique[row.phone].line}"))
                else:
                    unique[row.phone] = row
        rows = list(unique.values())
        async with self._writer.write() as session:
            connection = await session.connection()
            store = self._copy_in if connection.dialect.name == "postgresql" else self._insert_in
            blocked, inserted = await store(connection, rows)
        for row in rows:
            if row.phone in blocked:
                self._reject(RowError(row.line, row.phone, "on the do-not-call list"))
            elif row.phone not in inserted:
                self._reject(RowError(row.line, row.phone, "already in this campaign"))
        self.result.imported += len(inserted)

    async def _copy_in(self, connection: AsyncConnection, rows: list[ContactRow]) -> tuple[set[str], set[str]]:
        """PostgreSQL: the numbers on the do-not-call list are looked up, and the rest go straight
        into `contacts` by COPY (asyncpg's binary protocol), on the driver's connection inside the
        session's transaction. Numbers already in the campaign are left to the campaign's unique
        index while none has been met: the COPY runs in a savepoint, and once one meets such a
        number (a second import of a list, a number repeated far apart in the file) it is rolled
        back and, for this group and every later one, those numbers are looked up first. (The
        look-up cost a quarter of an import's time into a new campaign.) Imports into one campaign
        take turns (a lock held to the end of the transaction), so a number found new is still
        new when COPY writes it; nothing else adds contacts. Returns (the numbers on the
        do-not-call list, the numbers inserted)."""
        await connection.exec_driver_sql(  # through SQLAlchemy: this begins the session's transaction
            "SELECT pg_advisory_xact_lock(hashtext($1))", (f"contact_import:{self.campaign_id}",)
        )
        driver = (await connection.get_raw_connection()).driver_connection
        phones = [row.phone for row in rows]
        blocked = {r[0] for r in await driver.fetch("SELECT phone FROM do_not_call WHERE phone = ANY($1)", phones)}
        if self._all_new_so_far:
            new = [row for row in rows if row.phone not in blocked]
            try:
                async with connection.begin_nested():
                    await self._copy(connection, driver, new)
                return blocked, {row.phone for row in new}
            except asyncpg.UniqueViolationError:
                self._all_new_so_far = False
        existing = await driver.fetch(
            "SELECT phone FROM contacts WHERE campaign_id = $1 AND phone = ANY($2)", self.campaign_id, phones
        )
        skipped = blocked | {r[0] for r in existing}
        new = [row for row in rows if row.phone not in skipped]
        await self._copy(connection, driver, new)
        return blocked, {row.phone for row in new}

    async def _copy(self, connection: AsyncConnection, driver: asyncpg.Connection, rows: list[ContactRow]) -> None:
        await driver.copy_records_to_table("contacts", records=self._values(connection, rows), columns=_INSERT_COLUMNS)

    def _values(self, connection: AsyncConnection, rows: list[ContactRow]) -> list[tuple]:
        """Each row's values for _INSERT_COLUMNS, as the columns' SQLAlchemy types store them."""
        due = Contact.__table__.c.next_attempt_at.type.bind_processor(connection.dialect)(self.now)
        pending = ContactState.PENDING.value
        return [(self.campaign_id, r.phone, r.variables_json, r.timezone, r.line, pending, due, 0) for r in rows]

    async def _insert_in(self, connection: AsyncConnection, rows: list[ContactRow]) -> tuple[set[str], set[str]]:
        """SQLite: BATCH_ROWS at a time, the numbers on the do-not-call list looked up and the rest
        inserted by one multi-row INSERT. As on PostgreSQL, numbers already in the campaign are
        left to its unique index while none has been met; from the first one on, they are looked
        up before each INSERT. (SQLite has one writer at a time, so a number found new is still
        new when it is written.) The INSERT that meets one is undone by SQLite alone and the
        transaction goes on; a savepoint around it cost a quarter of the rate, as SQLite copies
        each page it touches into a sub-journal. An `ON CONFLICT DO NOTHING RETURNING phone`
        would say which rows went in, but the driver fetches each returned row with a step of its
        own, each giving up the interpreter's lock and waiting to take it back from the thread
        checking the next rows. Returns (the numbers on the do-not-call list, the numbers
        inserted)."""
        blocked: set[str] = set()
        inserted: set[str] = set()
        for start in range(0, len(rows), BATCH_ROWS):
            chunk = rows[start : start + BATCH_ROWS]
            phones = [row.phone for row in chunk]
            blocked |= await _phones_in(connection, "SELECT phone FROM do_not_call WHERE phone IN ({})", phones)
            new = [row for row in chunk if row.phone not in blocked]
            if not new:
                continue
            if self._all_new_so_far:
                try:
                    await self._insert(connection, new)
                    inserted.update(row.phone for row in new)
                    continue
                except IntegrityError:
                    self._all_new_so_far = False
            existing = await _phones_in(
                connection, "SELECT phone FROM contacts WHERE campaign_id = ? AND phone IN ({})", phones, self.campaign_id
            )
            new = [row for row in new if row.phone not in existing]
            if new:
                await self._insert(connection, new)
                inserted.update(row.phone for row in new)
        return blocked, inserted

    async def _insert(self, connection: AsyncConnection, rows: list[ContactRow]) -> None:
        """One multi-row INSERT, at the driver level."""
        values = [value for row in self._values(connection, rows) for value in row]
        tuples = ", ".join([f"({_marks(len(_INSERT_COLUMNS))})"] * len(rows))
        await connection.exec_driver_sql(f"INSERT INTO contacts ({', '.join(_INSERT_COLUMNS)}) VALUES {tuples}", tuple(values))


_INSERT_COLUMNS = ("campaign_id", "phone", "variables", "timezone", "row_number", "state", "next_attempt_at", "attempts")


def _marks(count: int) -> str:
    return ", ".join(["?"] * count)  # SQLite's parameters (PostgreSQL takes the COPY path)


async def _phones_in(connection: AsyncConnection, sql: str, phones: list[str], *before) -> set[str]:
    """SQLite: the numbers `sql` finds among `phones` (its `{}` becomes their parameters)."""
    result = await connection.exec_driver_sql(sql.format(_marks(len(phones))), (*before, *phones))
    return set(result.scalars())
