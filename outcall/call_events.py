"""Outgoing webhooks: `call.initiated`, `call.answered` and `call.ended`, delivered at least once.

Events are written to the `call_events` table in the same transaction as the change they
describe (an outbox), then a background loop POSTs them to CALL_EVENTS_WEBHOOK_URL, retrying
with exponential backoff. Each carries an `id` (also in the `Outcall-Event-Id` header) so a
receiver can drop duplicates, and is signed (delivered events are pruned after
CALL_EVENTS_RETENTION_DAYS; those given up on stay, and were logged as errors):

    Outcall-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with CALL_EVENTS_SECRET>
"""

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime, timedelta

import aiohttp
from loguru import logger
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from outcall.call_views import call_detail
from outcall.database import Database, for_update, uninterrupted, utcnow
from outcall.models import CallEvent, CallRecord

MAX_ATTEMPTS = 12  # with the backoff below: about 3.5 hours of trying
LEASE = timedelta(seconds=30)  # an instance sending an event holds it this long
PRUNE_EVERY = timedelta(hours=1)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(2 ** (attempts - 1), 3600))


def add_event(session: AsyncSession, event_type: str, record: CallRecord) -> None:
    """Queue an event about `record` in the caller's transaction."""
    event_id = str(uuid.uuid4())
    payload = {
        "id": event_id,
        "type": event_type,
        "created_at": utcnow().isoformat(),
        "data": json.loads(call_detail(record).model_dump_json()),
    }
    session.add(CallEvent(id=event_id, type=event_type, call_id=record.id, payload=payload))


class CallEventDelivery:
    """The loop that sends queued events; any number of server instances can run one."""

    def __init__(self, database: Database, url: str, secret: str, poll_secs: float = 1.0, retention_days: float = 7):
        self.database = database
        self.url = url
        self.secret = secret
        self.poll_secs = poll_secs
        self.retention = timedelta(days=retention_days)
        self._pruned_at: datetime | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._http: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._http:
            await self._http.close()

    async def _run(self) -> None:
        while True:
            try:
                while await self._send_one():
                    pass
                if self._pruned_at is None or utcnow() - self._pruned_at >= PRUNE_EVERY:
                    self._pruned_at = utcnow()
                    await self.prune()
            except Exception as e:  # the database may be briefly away; try again later
                logger.warning(f"Call events: {type(e).__name__}: {e}")
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_secs)
            except TimeoutError:
                pass
            self._wake.clear()

    @uninterrupted
    async def prune(self) -> int:
        """Forget events delivered longer ago than the retention period; returns how many.
        Events given up on are kept (and were logged as errors): they are what needs looking at."""
        async with self.database.write() as session:
            result = await session.execute(delete(CallEvent).where(CallEvent.delivered_at < utcnow() - self.retention))
        if result.rowcount:
            logger.info(f"Call events: pruned {result.rowcount} delivered more than {self.retention.days} days ago")
        return result.rowcount

    @uninterrupted
    async def _lease_next(self) -> CallEvent | None:
        """Take the oldest due event for LEASE, so another instance does not send it meanwhile."""
        async with self.database.write() as session:
            now = utcnow()
            query = (
                select(CallEvent)
                .where(CallEvent.delivered_at.is_(None), CallEvent.given_up_at.is_(None))
                .where(CallEvent.next_attempt_at <= now)
                .order_by(CallEvent.next_attempt_at)
                .limit(1)
            )
            event = (await session.execute(for_update(session, query, skip_locked=True))).scalar_one_or_none()
            if event is None:
                return None
            event.attempts += 1
            event.next_attempt_at = now + LEASE
            return event

    async def _send_one(self) -> bool:
        event = await self._lease_next()
        if event is None:
            return False
        body = json.dumps(event.payload).encode()
        headers = {
            "Content-Type": "application/json",
            "Outcall-Event-Id": event.id,
            "Outcall-Signature": sign(self.secret, int(time.time()), body),
        }
        try:
            async with self._http.post(self.url, data=body, headers=headers) as response:
                error = None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as e:
            error = type(e).__name__
        await self._settle(event, error)
        return True

    @uninterrupted
    async def _settle(self, event: CallEvent, error: str | None) -> None:
        """Record the attempt: delivered, to be retried, or given up."""
        async with self.database.write() as session:
            values: dict = {"last_error": error}
            if error is None:
                values["delivered_at"] = utcnow()
            elif event.attempts >= MAX_ATTEMPTS:
                values["given_up_at"] = utcnow()
                logger.error(f"Gave up on call event {event.id} ({event.type}) after {event.attempts} attempts: {error}")
            else:
                values["next_attempt_at"] = utcnow() + backoff(event.attempts)
                logger.warning(f"Call event {event.id} ({event.type}) not delivered: {error}; will retry")
            await session.execute(update(CallEvent).where(CallEvent.id == event.id).values(**values))
