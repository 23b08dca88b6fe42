"""Reconciliation: every call's record ends, whatever was lost on the way.

Twilio's status callbacks can fail to arrive (a signature mismatch behind a proxy, an outage, a
server restarted mid-call), a dial's response can be lost when the server dies mid-request,
and a bot can die without its final report. Each server instance runs this loop, so a record
is never left open:

- A call still open a minute after it was placed (or last checked) is looked up at Twilio: an
  ended call gets its final status, a live one is looked at again later, and a dial Twilio
  never received is abandoned (a campaign contact gets its attempt back).
- A call Twilio ended whose bot sent no final report within BOT_REPORT_GRACE (counted from when
  this instance first saw it so: Twilio's clock and ours may differ) is closed with end reason
  `bot-lost`, and `call.ended` fires once.
- A call Twilio cannot be asked about is closed once it is past its maximum duration plus
  Twilio's own `TimeLimit`, after which Twilio has certainly ended it.
- A test call from the console has no Twilio call: one whose browser never connected is closed
  once its stream token has expired, one whose server died mid-call once it is past its
  maximum duration. Without Twilio credentials only test calls are reconciled.

Campaign contacts follow their calls in the same transactions, so none is left `calling`.
"""

import asyncio
from datetime import datetime, timedelta

from loguru import logger
from twilio.rest import Client as TwilioClient

from outcall.call_store import CallStore
from outcall.models import FINAL_STATUSES, CallRecord
from outcall.twilio_api import TIME_LIMIT_GRACE_SECS, TwilioCallError, fetch_twilio_call, find_twilio_call
from outcall.values import Channel

RECONCILE_EVERY_SECS = 30
STALE_AFTER = timedelta(seconds=60)  # longer than any dial can take (Twilio's 15 s timeout, pacing)
BOT_REPORT_GRACE = timedelta(seconds=60)  # a bot's final report: its summary, then ~15 s of retries
GIVE_UP_AFTER = timedelta(minutes=5)  # past the call's maximum duration, when Twilio cannot say


class CallReconciler:
    """Settles open call records with Twilio, and closes those whose bot is gone."""

    def __init__(self, store: CallStore, twilio: TwilioClient | None, max_call_duration_secs: int):
        self.store = store
        self.twilio = twilio
        self.longest_call = timedelta(seconds=max_call_duration_secs + TIME_LIMIT_GRACE_SECS)
        self._unreported_since: dict[str, datetime] = {}  # call id → when this instance first saw it
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        last_pass = None
        while True:
            now = self.store.clock.now()
            if last_pass is None or now - last_pass >= timedelta(seconds=RECONCILE_EVERY_SECS):
                try:
                    await self.reconcile()
                except Exception:
                    logger.exception("Reconciliation pass failed; retrying")
                last_pass = now
            await asyncio.sleep(1)  # a moved clock (tests) is noticed within a second

    async def reconcile(self) -> int:
        """One pass; returns how many records it settled."""
        now = self.store.clock.now()
        settled = 0
        for record in await self.store.open_calls(quiet_since=now - STALE_AFTER):
            if record.channel == Channel.BROWSER:
                settled += await self._settle_browser_call(record, now)
                continue
            if self.twilio is None:
                continue
            try:
                settled += await self._settle_open_call(record, now)
            except TwilioCallError as e:
                if now - record.created_at > self.longest_call + GIVE_UP_AFTER:
                    await self.store.close_without_bot(
                        record.id, f"Twilio could not be asked about the call ({e.message}); closed after its maximum duration",
                        status="completed",
                    )
                    settled += 1
                else:
                    logger.warning(f"Cannot reconcile call {record.id} yet: {e.message}")
        unreported = {record.id for record in await self.store.unreported_calls()}
        self._unreported_since = {call_id: self._unreported_since.get(call_id, now) for call_id in unreported}
        for call_id, since in list(self._unreported_since.items()):
            if now - since >= BOT_REPORT_GRACE:
                logger.warning(f"Call {call_id} ended without its bot's final report; closing it as bot-lost")
                await self.store.close_without_bot(call_id, "the bot stopped without its final report (process killed?)")
                del self._unreported_since[call_id]
                settled += 1
        return settled

    async def _settle_browser_call(self, record: CallRecord, now: datetime) -> bool:
        """A test call is live while its server is; only a stream that never came or a server that
        died leaves one open (STALE_AFTER outlasts the test call's stream token)."""
        if record.claimed_at is None:
            await self.store.close_without_bot(record.id, "the test phone never connected", status="canceled")
            return True
        if now - record.created_at > self.longest_call + GIVE_UP_AFTER:
            await self.store.close_without_bot(record.id, "the server stopped during the test call", status="completed")
            return True
        await self.store.checked(record.id)
        return False

    async def _settle_open_call(self, record: CallRecord, now: datetime) -> bool:
        if record.call_sid:
            twilio_call = await fetch_twilio_call(self.twilio, record.call_sid)
        else:
            twilio_call = await find_twilio_call(self.twilio, record.to_number, record.from_number, record.created_at)
            if twilio_call is None:
                logger.warning(f"Call {record.id} never reached Twilio (the server stopped mid-dial)")
                await self.store.dial_abandoned(record.id, "the server stopped before Twilio received the dial")
                return True
            await self.store.dialed(record.id, twilio_call.sid)
        status = str(twilio_call.status)
        if status not in FINAL_STATUSES:
            await self.store.checked(record.id)
            return False
        duration = int(twilio_call.duration) if twilio_call.duration else None
        await self.store.apply_status(record.id, twilio_call.sid, status, twilio_call.end_time or now, duration)
        logger.info(f"Reconciled call {record.id}: Twilio says {status}")
        return True
