"""The do-not-call list: numbers no campaign and no `/dialout` may dial.

It is checked at dial time (a number added after a contact was imported is still never
dialed), and at import. A call whose outcome is `do_not_call` adds its number.
"""

from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from outcall.database import Database, insert_ignoring_duplicates, uninterrupted, utcnow
from outcall.models import DoNotCall
from outcall.phone_numbers import PhoneNumber
from outcall.request_body import RequestBody


class DoNotCallEntry(BaseModel):
    phone: str
    reason: str | None
    source: str
    created_at: datetime


class DoNotCallAdd(RequestBody):
    """Numbers to add, with an optional reason kept beside each."""

    phones: list[PhoneNumber] = Field(min_length=1, max_length=10_000)
    reason: str | None = Field(default=None, max_length=500)


async def add_numbers(session: AsyncSession, phones: Iterable[str], reason: str | None, source: str) -> None:
    rows = [{"phone": p, "reason": reason, "source": source, "created_at": utcnow()} for p in phones]
    if rows:
        await session.execute(insert_ignoring_duplicates(session.bind.dialect.name, DoNotCall), rows)


async def listed(session: AsyncSession, phones: Iterable[str]) -> set[str]:
    """Those of `phones` on the list."""
    phones = list(phones)
    if not phones:
        return set()
    rows = await session.execute(select(DoNotCall.phone).where(DoNotCall.phone.in_(phones)))
    return set(rows.scalars())


class DoNotCallList:
    """Reads and changes of the list, each in its own transaction."""

    def __init__(self, database: Database):
        self.database = database

    @uninterrupted
    async def add(self, phones: Iterable[str], reason: str | None, source: str) -> None:
        async with self.database.write() as session:
            await add_numbers(session, phones, reason, source)

    @uninterrupted
    async def remove(self, phone: str) -> bool:
        async with self.database.write() as session:
            removed = await session.execute(delete(DoNotCall).where(DoNotCall.phone == phone))
        return removed.rowcount > 0

    @uninterrupted
    async def get(self, phone: str) -> DoNotCall | None:
        async with self.database.session() as session:
            return await session.get(DoNotCall, phone)

    @uninterrupted
    async def page(self, after: str | None, limit: int) -> list[DoNotCall]:
        """Entries in number order, after the number `after`."""
        query = select(DoNotCall).order_by(DoNotCall.phone).limit(limit)
        if after:
            query = query.where(DoNotCall.phone > after)
        async with self.database.session() as session:
            return list((await session.execute(query)).scalars())
