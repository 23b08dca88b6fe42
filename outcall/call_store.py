"""Call records: created at `/dialout`, then kept up to date by Twilio's callbacks and the bot.

Every change is idempotent and order-tolerant, because Twilio retries webhooks and can deliver
them out of order, and the bot retries its reports: a status already in the timeline changes
nothing, a final status is never replaced, a report older than the last one applied is ignored,
and the end reason is set once, by whoever knows it first.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, Text, case, cast, event, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from outcall.call_events import add_event
from outcall.calls import CallClaimError, CallConfig
from outcall.clock import Clock, SystemClock
from outcall.contact_calls import DO_NOT_CALL_OUTCOME, follow_call
from outcall.do_not_call import add_numbers
from outcall.database import Database, for_update, uninterrupted, utcnow
from outcall.models import FINAL_STATUSES, STATUS_ORDER, CallRecord, EndReason, status_rank
from outcall.reports import CallReport
from outcall.stream_auth import StreamTokenError, issue_report_token, verify_stream_token
from outcall.values import Channel

# What a bot taking a call back from a transfer is told first (it speaks before the callee does).
RESUME_NOTE = (
    "You tried to transfer this call to a colleague, but the transfer did not go through ({status}). "
    "Tell the person briefly that nobody could take the call right now, then carry on helping them."
)

UNANSWERED_END_REASONS = {
    "busy": EndReason.BUSY,
    "no-answer": EndReason.NO_ANSWER,
    "failed": EndReason.FAILED,
    "canceled": EndReason.CANCELED,
}


@dataclass(frozen=True)
class CallFilter:
    """Which calls a list or an export shows; every field left as None matches all."""

    status: str | None = None
    outcome: str | None = None
    end_reason: str | None = None
    campaign_id: str | None = None
    number: str | None = None  # the number called
    channel: str | None = None  # phone or browser (test calls)
    analysis: tuple[str, str, str] | None = None  # (field, its type, value): calls whose analysis has it
    agent_id: str | None = None
    agent_version: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def apply(self, query: Select) -> Select:
        for column, value in (
            (CallRecord.status, self.status),
            (CallRecord.outcome, self.outcome),
            (CallRecord.end_reason, self.end_reason),
            (CallRecord.campaign_id, self.campaign_id),
            (CallRecord.to_number, self.number),
            (CallRecord.channel, self.channel),
            (CallRecord.agent_id, self.agent_id),
            (CallRecord.agent_version, self.agent_version),
        ):
            if value is not None:
                query = query.where(column == value)
        if self.analysis:
            name, kind, value = self.analysis
            stored = CallRecord.analysis[name]
            if kind == "boolean":
                query = query.where(stored.as_boolean() == (value == "true"))
            elif kind == "number":
                query = query.where(stored.as_float() == float(value))
            else:
                query = query.where(stored.as_string() == value)
        if self.created_after:
            query = query.where(CallRecord.created_at >= self.created_after)
        if self.created_before:
            query = query.where(CallRecord.created_at < self.created_before)
        return query


@dataclass
class CallFigures:
    """How calls placed since a moment went."""

    placed: int
    answered: int
    pickup_rate: float | None  # answered / ended
    average_talk_secs: float | None
    outcomes: dict[str, int] = field(default_factory=dict)


class UnknownCall(LookupError):
    """No call record has this id."""

    def __init__(self, call_id: str):
        super().__init__(f"no call {call_id}")


class CallStore:
    """All reads and writes of call records."""

    def __init__(
        self,
        database: Database,
        *,
        events_enabled: bool = False,
        on_event: Callable[[], None] = lambda: None,
        clock: Clock | None = None,
    ):
        self.database = database
        self.events_enabled = events_enabled
        self._on_event = on_event
        self.clock = clock or SystemClock()
        self.on_slot_freed: Callable[[], None] = lambda: None  # the dispatcher's wake-up

    # --- creation and dialing ----------------------------------------------------------------

    @staticmethod
    def new_record(
        config: CallConfig,
        *,
        variables: dict,
        metadata: dict,
        created_at: datetime,
        campaign_id: str | None = None,
        contact_id: int | None = None,
    ) -> CallRecord:
        """The record of a call about to be dialed, to be written before Twilio is asked.
        `created_at` comes from the store's clock, the time base reconciliation judges age by."""
        return CallRecord(
            id=config.call_id,
            created_at=created_at,
            to_number=config.to_number,
            from_number=config.from_number,
            variables=variables,
            call_metadata=metadata,
            config=config.model_dump(),
            status="queued",
            timeline=[{"status": "queued", "at": utcnow().isoformat()}],
            voicemail_action=config.voicemail_action,
            transfer_number=config.transfer_number,
            transcript=[],
            latencies_ms=[],
            campaign_id=campaign_id,
            contact_id=contact_id,
            channel=config.channel,
            agent_id=config.agent_id,
            agent_version=config.agent_version,
        )

    @uninterrupted
    async def create(self, config: CallConfig, *, variables: dict, metadata: dict) -> CallRecord:
        record = self.new_record(config, variables=variables, metadata=metadata, created_at=self.clock.now())
        async with self.database.write() as session:
            session.add(record)
        return record

    @uninterrupted
    async def create_browser_call(self, config: CallConfig, *, variables: dict, metadata: dict, call_sid: str) -> CallRecord:
        """A test call from the console: no Twilio call, so the server names it (`call_sid`) and
        it is `initiated` at once; it is answered when the browser's stream claims it."""
        record = self.new_record(config, variables=variables, metadata=metadata, created_at=self.clock.now())
        record.call_sid = call_sid
        async with self.database.write() as session:
            session.add(record)
            self._apply_status(session, record, "initiated", utcnow())
        return record

    @uninterrupted
    async def open_browser_calls(self) -> int:
        """Test calls not yet ended, in every server process."""
        query = select(func.count()).where(CallRecord.channel == Channel.BROWSER, CallRecord.status.in_(STATUS_ORDER))
        async with self.database.session() as session:
            return (await session.execute(query)).scalar_one()

    @uninterrupted
    async def browser_call_ended(self, call_id: str) -> None:
        """The test phone's stream closed: there is no Twilio to say so, so the server ends the
        record itself (after the bot's final report, or as `bot-lost` without one)."""
        async with self.database.write() as session:
            record = await self._locked(session, call_id)
            if record.is_final:
                return
            if record.final_report_at is None:
                record.error = record.error or "the bot stopped without its final report"
                self._set_end_reason(record, EndReason.BOT_LOST)
            self._apply_status(session, record, "completed", self.clock.now())
            self._maybe_ended(session, record, bot_lost=True)
            await self._follow(session, record)

    @uninterrupted
    async def dialed(self, call_id: str, call_sid: str) -> None:
        """Twilio accepted the call and gave it a CallSid."""
        async with self.database.write() as session:
            record = await self._locked(session, call_id)
            record.call_sid = record.call_sid or call_sid
            self._event(session, "call.initiated", record)
            await self._follow(session, record)

    @uninterrupted
    async def dial_refused(self, call_id: str, error: str) -> None:
        """Twilio refused or could not be reached: the call failed before it began."""
        async with self.database.write() as session:
            record = await self._locked(session, call_id)
            record.error = error
            self._set_end_reason(record, EndReason.ERROR)
            self._apply_status(session, record, "failed", utcnow())
            await self._follow(session, record)

    @uninterrupted
    async def dial_abandoned(self, call_id: str, error: str) -> None:
        """The dial never reached Twilio (the server stopped first): the attempt did not happen."""
        async with self.database.write() as session:
            record = await self._locked(session, call_id)
            record.error = error
            self._set_end_reason(record, EndReason.ERROR)
            self._apply_status(session, record, "canceled", utcnow())
            await self._follow(session, record, attempted=False)

    # --- Twilio's webhooks -------------------------------------------------------------------

    @uninterrupted
    async def apply_status(
        self, call_id: str, call_sid: str, status: str, at: datetime, call_duration: int | None = None
    ) -> CallRecord | None:
        """A status callback; None if it names no call of ours."""
        async with self.database.write() as session:
            record = await self._locked_for_twilio(session, call_id, call_sid)
            if record is not None:
                self._apply_status(session, record, status, at, call_duration)
                await self._follow(session, record)
            return record

    @uninterrupted
    async def answered(self, call_id: str, call_sid: str) -> CallConfig | None:
        """Twilio fetched `/twiml`: the call is in progress. None if it is no call of ours."""
        async with self.database.write() as session:
            record = await self._locked_for_twilio(session, call_id, call_sid)
            if record is None or record.is_final:
                return None
            self._apply_status(session, record, "in-progress", utcnow())
            return CallConfig.model_validate(record.config)

    @uninterrupted
    async def apply_answered_by(
        self, call_id: str, call_sid: str, answered_by: str
    ) -> tuple[CallRecord | None, bool]:
        """Twilio's answering-machine verdict, and whether it is the first (only the first counts)."""
        async with self.database.write() as session:
            record = await self._locked_for_twilio(session, call_id, call_sid)
            if record is None or record.answered_by is not None:
                return record, False
            record.answered_by = answered_by
            return record, True

    @uninterrupted
    async def voicemail_handled(self, call_id: str, reason: EndReason) -> None:
        async with self.database.write() as session:
            record = await self._locked(session, call_id)
            self._set_end_reason(record, reason)
            record.outcome = "voicemail"

    @uninterrupted
    async def apply_recording(
        self, call_id: str, call_sid: str, recording_sid: str, url: str, duration_secs: int | None
    ) -> CallRecord | None:
        async with self.database.write() as session:
            record = await self._locked_for_twilio(session, call_id, call_sid)
            if record is not None:
                record.recording_sid = recording_sid
                record.recording_url = url
                record.recording_duration_secs = duration_secs
            return record

    # --- the bot -----------------------------------------------------------------------------

    @uninterrupted
    async def claim(
        self, call_id: str, token: str | None, secret: str, report_ttl_secs: int, channel: Channel = Channel.PHONE
    ) -> CallConfig:
        """Hand an answered call's config to the one bot whose stream token proves it serves it,
        over the channel the call was made for (a test call's token opens no phone stream, and
        the other way round). A test call is answered by this claim.

        The claim is a conditional UPDATE, so it holds across server instances sharing a database.
        """
        async with self.database.session() as session:
            record = await session.get(CallRecord, call_id)
        browser = channel == Channel.BROWSER
        if record is None or record.call_sid is None or (record.answered_at is None and not browser):
            raise CallClaimError(404, f"no answered call {call_id} is waiting for a bot")
        try:
            verify_stream_token(
                secret,
                token,
                call_id=call_id,
                call_sid=record.call_sid,
                to_number=record.to_number,
                from_number=record.from_number,
            )
        except StreamTokenError as e:
            raise CallClaimError(403, str(e))
        if record.channel != channel:
            raise CallClaimError(403, f"call {call_id} is a {record.channel} call, not a {channel} one")
        async with self.database.write() as session:
            claimed = await session.execute(
                update(CallRecord)
                .where(CallRecord.id == call_id, CallRecord.claimed_at.is_(None))
                .values(claimed_at=utcnow())
            )
            if claimed.rowcount == 1 and browser:
                self._apply_status(session, await self._locked(session, call_id), "in-progress", utcnow())
        if claimed.rowcount != 1:
            raise CallClaimError(409, f"call {call_id} already has a bot")
        config = CallConfig.model_validate(record.config)
        config.report_token = issue_report_token(secret, call_id=call_id, ttl_secs=report_ttl_secs)
        config.bot_generation = record.bot_generation
        if record.bot_generation:  # the call came back from a transfer: the conversation so far
            config.history = record.transcript
            config.resume_note = RESUME_NOTE.format(status=record.transfer_status)
        return config

    @uninterrupted
    async def apply_report(self, call_id: str, report: CallReport) -> CallRecord:
        async with self.database.write() as session:
            record = await self._locked(session, call_id)
            if report.generation != record.bot_generation:
                return record  # from a bot session the call has moved on from (a warm transfer came back)
            if report.sequence <= record.report_sequence or record.final_report_at:
                return record  # a retry or a late arrival: what we have is as new or newer
            record.report_sequence = report.sequence
            record.transcript = [turn.model_dump(mode="json") for turn in report.transcript]
            record.latencies_ms = [t.latency_ms for t in report.transcript if t.latency_ms is not None]
            if report.outcome and record.outcome != "voicemail" and not record.outcome_corrections:
                record.outcome = report.outcome.outcome
                record.outcome_notes = report.outcome.notes or None
                record.callback_time = report.outcome.callback_time
            record.summary = report.summary or record.summary
            if report.analysis is not None:
                record.analysis = report.analysis
                record.analysis_errors = report.analysis_errors or {}
            if report.final:
                record.final_report_at = utcnow()
                if report.end_reason:
                    self._set_end_reason(record, report.end_reason)
                self._maybe_ended(session, record)
            await self._follow(session, record)
            return record

    # --- reconciliation (outcall/reconciler.py) ---------------------------------------------------

    @uninterrupted
    async def open_calls(self, quiet_since: datetime, limit: int = 500) -> list[CallRecord]:
        """Calls not yet final, created before `quiet_since` and not checked with Twilio since."""
        query = (
            select(CallRecord)
            .where(CallRecord.status.in_(STATUS_ORDER), CallRecord.created_at < quiet_since)
            .where(or_(CallRecord.checked_at.is_(None), CallRecord.checked_at < quiet_since))
            .order_by(CallRecord.created_at)
            .limit(limit)
        )
        async with self.database.session() as session:
            return list((await session.execute(query)).scalars())

    @uninterrupted
    async def checked(self, call_id: str) -> None:
        """Twilio says the call is still live: look again later."""
        async with self.database.write() as session:
            (await self._locked(session, call_id)).checked_at = self.clock.now()

    @uninterrupted
    async def unreported_calls(self, limit: int = 500) -> list[CallRecord]:
        """Calls Twilio ended whose bot has not (yet) sent its final report."""
        query = (
            select(CallRecord)
            .where(CallRecord.status.in_(FINAL_STATUSES), CallRecord.claimed_at.is_not(None))
            .where(CallRecord.final_report_at.is_(None), CallRecord.ended_event_sent.is_(False))
            .limit(limit)
        )
        async with self.database.session() as session:
            return list((await session.execute(query)).scalars())

    @uninterrupted
    async def close_without_bot(self, call_id: str, error: str, status: str | None = None) -> None:
        """End a record whose bot died without its final report (`bot-lost`); `status`: the final
        status to give a call Twilio could not be asked about."""
        async with self.database.write() as session:
            record = await self._locked(session, call_id)
            if record.final_report_at or record.ended_event_sent:
                return
            record.error = record.error or error
            self._set_end_reason(record, EndReason.BOT_LOST if record.claimed_at else EndReason.ERROR)
            if status and not record.is_final:
                self._apply_status(session, record, status, self.clock.now())
            self._maybe_ended(session, record, bot_lost=True)
            await self._follow(session, record)

    # --- transfers ---------------------------------------------------------------------------

    @uninterrupted
    async def transfer_started(self, call_id: str, warm: bool, note: str) -> None:
        """A cold transfer ends the call's part in outcall at once; a warm one waits for its result."""
        async with self.database.write() as session:
            record = await self._locked(session, call_id)
            record.transfer_status, record.transfer_note = ("dialing" if warm else "dialed"), note or None
            if not warm:
                self._set_end_reason(record, EndReason.TRANSFERRED)

    @uninterrupted
    async def transfer_answered(self, call_id: str, call_sid: str, accepted: bool) -> CallRecord | None:
        """The person who picked up pressed 1 (accepted), or did not."""
        async with self.database.write() as session:
            record = await self._locked_for_twilio(session, call_id, call_sid)
            if record is not None and record.transfer_status == "dialing":
                record.transfer_status = "accepted" if accepted else "declining"  # settled by the result
            return record

    @uninterrupted
    async def transfer_result(
        self, call_id: str, call_sid: str, dial_status: str, back_to_bot: bool = False
    ) -> CallRecord | None:
        """The warm transfer's `<Dial>` ended. Connected: the call ends as `transferred`. Else,
        `back_to_bot`: the call is handed to a new bot session (the earlier one's reports no
        longer count), or it ends as `transfer-failed` (this outcome is the one that counts,
        whatever the bot reported)."""
        async with self.database.write() as session:
            record = await self._locked_for_twilio(session, call_id, call_sid)
            if record is None or record.transfer_status not in ("dialing", "accepted", "declining"):
                return record  # a retried callback
            if record.transfer_status == "accepted" and dial_status == "completed":
                record.transfer_status = "connected"
                record.end_reason = EndReason.TRANSFERRED.value
                return record
            answered = record.transfer_status in ("accepted", "declining") or dial_status == "completed"
            record.transfer_status = "declined" if answered else (dial_status if dial_status in ("no-answer", "busy") else "failed")
            if back_to_bot:
                record.bot_generation += 1
                record.claimed_at = record.final_report_at = record.end_reason = None
                record.report_sequence = -1
            else:
                record.end_reason = EndReason.TRANSFER_FAILED.value
            return record

    @uninterrupted
    async def set_end_reason(self, call_id: str, reason: EndReason) -> None:
        async with self.database.write() as session:
            self._set_end_reason(await self._locked(session, call_id), reason)

    # --- reading -----------------------------------------------------------------------------

    @uninterrupted
    async def get(self, call_id: str) -> CallRecord | None:
        async with self.database.session() as session:
            return await session.get(CallRecord, call_id)

    @uninterrupted
    async def list(
        self, where: CallFilter | None = None, *, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[CallRecord], str | None]:
        """Newest first; the second value is the cursor of the next page, None after the last."""
        async with self.database.session() as session:
            records = list((await session.execute(self._page(where, cursor, limit + 1))).scalars())
        if len(records) <= limit:
            return records, None
        last = records[limit - 1]
        return records[:limit], encode_cursor(last.created_at, last.id)

    async def rows(
        self, columns: dict[str, str], where: CallFilter | None = None, page_size: int = 2000, as_text: set[str] = frozenset()
    ) -> AsyncIterator[Row]:
        """`columns` ({name in the row: attribute of CallRecord}) of every matching call, newest
        first, a page per query: an export of any size in flat memory, without building records.
        JSON columns named in `as_text` come as their stored text."""
        selected = [
            (cast(getattr(CallRecord, attr), Text) if name in as_text else getattr(CallRecord, attr)).label(name)
            for name, attr in columns.items()
        ]
        keys = [CallRecord.created_at.label("_created_at"), CallRecord.id.label("_id")]
        cursor = None
        while True:
            page = await self._rows_page(select(*selected, *keys), where, cursor, page_size)
            for row in page:
                yield row
            if len(page) < page_size:
                return
            cursor = encode_cursor(page[-1]._created_at, page[-1]._id)

    @uninterrupted
    async def _rows_page(self, query: Select, where: CallFilter | None, cursor: str | None, limit: int) -> list[Row]:
        async with self.database.session() as session:  # Core, not the ORM: plain rows, no identity map
            return list(await (await session.connection()).execute(self._page(where, cursor, limit, query)))

    @staticmethod
    def _page(where: CallFilter | None, cursor: str | None, limit: int, query: Select | None = None) -> Select:
        query = (query if query is not None else select(CallRecord))
        query = query.order_by(CallRecord.created_at.desc(), CallRecord.id.desc()).limit(limit)
        if where:
            query = where.apply(query)
        if cursor:  # a row-value comparison, which both engines answer from ix_calls_created
            at, call_id = decode_cursor(cursor)
            query = query.where(tuple_(CallRecord.created_at, CallRecord.id) < tuple_(at, call_id))
        return query

    @uninterrupted
    async def in_progress(self, limit: int = 200) -> list[CallRecord]:
        """Calls not yet ended, newest first."""
        query = (
            select(CallRecord)
            .where(CallRecord.status.in_(STATUS_ORDER))
            .order_by(CallRecord.created_at.desc())
            .limit(limit)
        )
        async with self.database.session() as session:
            return list((await session.execute(query)).scalars())

    @uninterrupted
    async def changed_since(self, since: datetime, limit: int = 200) -> list[CallRecord]:
        """Calls changed at or after `since`, oldest change first: what a live page must redraw."""
        query = (
            select(CallRecord).where(CallRecord.updated_at >= since).order_by(CallRecord.updated_at).limit(limit)
        )
        async with self.database.session() as session:
            return list((await session.execute(query)).scalars())

    @uninterrupted
    async def figures(self, since: datetime) -> CallFigures:
        """Totals for phone calls placed since `since` (test calls are left out): how many,
        answered, and of those that ended, the share answered and the average talk time; outcomes."""
        phone_calls_since = (CallRecord.created_at >= since) & (CallRecord.channel == Channel.PHONE)
        ended = CallRecord.status.in_(FINAL_STATUSES)
        answered = CallRecord.answered_at.is_not(None)
        totals = select(
            func.count(),
            func.count(CallRecord.answered_at),
            func.count(case((ended, 1))),
            func.count(case((ended & answered, 1))),
            func.avg(case((ended & answered, CallRecord.talk_secs))),
        ).where(phone_calls_since)
        outcomes = (
            select(CallRecord.outcome, func.count())
            .where(phone_calls_since, CallRecord.outcome.is_not(None))
            .group_by(CallRecord.outcome)
        )
        async with self.database.session() as session:
            placed, answered_count, ended_count, answered_ended, talk = (await session.execute(totals)).one()
            by_outcome = dict((await session.execute(outcomes)).all())
        return CallFigures(
            placed=placed,
            answered=answered_count,
            pickup_rate=round(answered_ended / ended_count, 3) if ended_count else None,
            average_talk_secs=round(float(talk), 1) if talk is not None else None,
            outcomes=by_outcome,
        )

    @uninterrupted
    async def agent_results(self, agent_id: str) -> dict[int, dict[str, Any]]:
        """Each version of an agent: its calls, how many were answered, and their outcomes."""
        query = (
            select(CallRecord.agent_version, CallRecord.outcome, func.count(), func.count(CallRecord.answered_at))
            .where(CallRecord.agent_id == agent_id)
            .group_by(CallRecord.agent_version, CallRecord.outcome)
        )
        results: dict[int, dict[str, Any]] = {}
        async with self.database.session() as session:
            for version, outcome, calls, answered in (await session.execute(query)).all():
                result = results.setdefault(version, {"calls": 0, "answered": 0, "outcomes": {}})
                result["calls"] += calls
                result["answered"] += answered
                if outcome:
                    result["outcomes"][outcome] = calls
        return dict(sorted(results.items(), reverse=True))

    # --- an operator's corrections -----------------------------------------------------------

    @uninterrupted
    async def correct_outcome(self, call_id: str, outcome: str, notes: str | None, by: str) -> CallRecord:
        """Replace the call's outcome, keeping what it was, who changed it and when. The bot's
        later reports no longer change it. `do_not_call` lists the number, as the bot's would."""
        async with self.database.write() as session:
            record = await self._locked(session, call_id)
            correction = {
                "outcome": outcome,
                "notes": notes,
                "previous": record.outcome,
                "by": by,
                "at": self.clock.now().isoformat(),
            }
            record.outcome_corrections = [*record.outcome_corrections, correction]
            record.outcome, record.outcome_notes = outcome, notes
            await self._follow(session, record)
            return record

    # --- internals ---------------------------------------------------------------------------

    async def _follow(self, session: AsyncSession, record: CallRecord, attempted: bool = True) -> None:
        """What follows from a change to a call, in the same transaction: a callee who asked not
        to be called again goes on the do-not-call list; a campaign call's contact follows it."""
        if record.outcome == DO_NOT_CALL_OUTCOME and record.channel == Channel.PHONE:
            await add_numbers(session, [record.to_number], f"asked not to be called again (call {record.id})", "outcome")
        if record.contact_id is not None:
            if await follow_call(session, record, self.clock.now(), attempted):
                _after_commit(session, self.on_slot_freed)

    async def _locked(self, session: AsyncSession, call_id: str) -> CallRecord:
        query = for_update(session, select(CallRecord).where(CallRecord.id == call_id))
        record = (await session.execute(query)).scalar_one_or_none()
        if record is None:
            raise UnknownCall(call_id)
        return record

    async def _locked_for_twilio(self, session: AsyncSession, call_id: str, call_sid: str) -> CallRecord | None:
        """The record a Twilio webhook is about, or None if the CallSid belongs to another call.

        Callbacks can arrive before `/dialout` has stored the CallSid; the first one sets it.
        """
        try:
            record = await self._locked(session, call_id)
        except UnknownCall:
            return None
        if record.call_sid is None:
            record.call_sid = call_sid
        return record if record.call_sid == call_sid else None

    def _apply_status(
        self, session: AsyncSession, record: CallRecord, status: str, at: datetime, call_duration: int | None = None
    ) -> None:
        if status not in STATUS_ORDER + FINAL_STATUSES:
            return
        seen = {change["status"] for change in record.timeline}
        if status in seen or (status in FINAL_STATUSES and record.is_final):
            return  # a duplicate, or a second final status: the first one stands
        record.timeline = sorted(
            [*record.timeline, {"status": status, "at": at.isoformat()}],
            key=lambda change: (status_rank(change["status"]), change["at"]),
        )
        if status_rank(status) > status_rank(record.status):
            record.status = status
        if status == "in-progress" and record.answered_at is None:
            record.answered_at = at
            if not record.is_final:  # a late `in-progress` completes the history, not the news
                self._event(session, "call.answered", record)
        if status in FINAL_STATUSES:
            record.ended_at = at
            if status == "completed" and call_duration is not None:
                record.talk_secs = float(call_duration)  # Twilio's count, from answer to hang-up
            if status in UNANSWERED_END_REASONS:
                self._set_end_reason(record, UNANSWERED_END_REASONS[status])
            elif record.claimed_at is None:
                record.error = record.error or "the call was answered but no bot connected to its stream"
                self._set_end_reason(record, EndReason.ERROR)
        if record.talk_secs is None and record.answered_at and record.ended_at:
            record.talk_secs = max(0.0, (record.ended_at - record.answered_at).total_seconds())
        times = {change["status"]: datetime.fromisoformat(change["at"]) for change in record.timeline}
        if "ringing" in times:
            rang_until = times.get("in-progress") or next((times[s] for s in FINAL_STATUSES if s in times), None)
            if rang_until:
                record.ring_secs = max(0.0, (rang_until - times["ringing"]).total_seconds())
        self._maybe_ended(session, record)

    @staticmethod
    def _set_end_reason(record: CallRecord, reason: EndReason) -> None:
        record.end_reason = record.end_reason or reason.value

    def _maybe_ended(self, session: AsyncSession, record: CallRecord, bot_lost: bool = False) -> None:
        """`call.ended` once Twilio says the call is over and its bot, if it had one, has reported
        (or is known to be gone)."""
        if record.ended_event_sent or not record.is_final:
            return
        if record.claimed_at is not None and record.final_report_at is None and not bot_lost:
            return
        record.ended_event_sent = True
        self._event(session, "call.ended", record)

    def _event(self, session: AsyncSession, event_type: str, record: CallRecord) -> None:
        if not self.events_enabled:
            return
        add_event(session, event_type, record)
        _after_commit(session, self._on_event)


def _after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run `callback` once the session's transaction commits (once, however often asked)."""
    callbacks = session.info.setdefault("after_commit", set())
    if callback not in callbacks:
        callbacks.add(callback)
        event.listen(session.sync_session, "after_commit", lambda _: callback())


def encode_cursor(at: datetime, call_id: str) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{call_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError for a cursor this server did not make."""
    try:
        at, call_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(at), call_id
    except Exception:
        raise ValueError("invalid cursor: pass the next_cursor value of a previous page unchanged")
