"""The dispatcher: a loop in the server that dials each running campaign's due contacts.

Every decision is made in the database, so several server instances sharing PostgreSQL can run
it at once: a campaign's row is locked (`FOR UPDATE SKIP LOCKED`) while its next dials are
chosen, so its concurrency, pacing and daily cap are counted by one instance at a time, and
contacts are claimed by moving them to `dialing` in that same transaction. A contact is
dialed only inside its calling window and never while it is on the do-not-call list.

A call's slot is freed when Twilio reports its end, whatever the end (outcall/contact_calls.py).
After a crash, reconciliation (outcall/reconciler.py) settles attempts left `dialing` or `calling`.
On SQLite, one server instance is the supported limit.
"""

import asyncio
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from loguru import logger
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.rest import Client as TwilioClient

from outcall import do_not_call, prompts
from outcall.agents import AgentProfile, config_with_agent, script_with_agent
from outcall.call_store import CallStore
from outcall.calling_windows import is_open, next_opening, zone
from outcall.calls import CallConfig, render_call_config
from outcall.campaigns import CampaignSettings
from outcall.clock import Clock
from outcall.contact_calls import DoneReason
from outcall.greetings import GreetingAudio
from outcall.database import Database, for_update, uninterrupted
from outcall.models import IN_FLIGHT, FINAL_STATUSES, Agent, Campaign, CampaignStatus, CallRecord, Contact, ContactState
from outcall.settings import Settings
from outcall.twilio_api import TwilioCallError, make_twilio_call

TICK_SECS = 0.25  # while a campaign runs: pacing and calling windows are kept to this
# While none runs: a start through this server wakes the dispatcher at once, one through another
# instance or the CLI is seen within this. Polling at 0.25 s was most of an idle server's CPU.
IDLE_TICK_SECS = 2.0
BREAKER_WINDOW = 20  # the circuit breaker judges a campaign's last 20 ended calls…
BREAKER_MIN_CALLS = 5  # …once it has at least 5…
BREAKER_FAILURE_RATE = 0.5  # …and pauses it when half or more failed


@dataclass
class Dial:
    """A claimed contact's call, to be placed at `at`."""

    campaign_id: str
    config: CallConfig
    at: datetime


class Dispatcher:
    """Dials due contacts of running campaigns, within their windows and limits."""

    def __init__(
        self,
        database: Database,
        store: CallStore,
        settings: Settings,
        twilio: TwilioClient,
        clock: Clock,
        greetings: GreetingAudio | None = None,
    ):
        self.database = database
        self.greetings = greetings
        self.store = store
        self.settings = settings
        self.twilio = twilio
        self.clock = clock
        self._task: asyncio.Task | None = None
        self._dials: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._campaigns_running = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        """Look at the campaigns now (a campaign started or resumed, contacts were added)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop choosing contacts; let dials already under way finish."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._dials, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.dispatch()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Dispatcher pass failed; retrying")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_SECS if self._campaigns_running else IDLE_TICK_SECS)
            except TimeoutError:
                pass

    # --- choosing whom to call -----------------------------------------------------------------

    async def dispatch(self) -> int:
        """One pass over the running campaigns; returns how many dials it started."""
        started = 0
        campaigns = await self._running_campaigns()
        self._campaigns_running = bool(campaigns)
        for campaign_id in campaigns:
            for dial in await self.claim(campaign_id):
                task = asyncio.create_task(self._dial(dial))
                self._dials.add(task)
                task.add_done_callback(self._dials.discard)
                started += 1
        return started

    @uninterrupted
    async def _running_campaigns(self) -> list[str]:
        async with self.database.session() as session:
            query = select(Campaign.id).where(Campaign.status == CampaignStatus.RUNNING)
            return list((await session.execute(query)).scalars())

    @uninterrupted
    async def claim(self, campaign_id: str) -> list[Dial]:
        """Choose and claim the campaign's next dials, in one transaction under its row lock."""
        now = self.clock.now()
        async with self.database.write() as session:
            query = select(Campaign).where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.RUNNING)
            # skip_locked: another instance is deciding for this campaign right now.
            campaign = (await session.execute(for_update(session, query, skip_locked=True))).scalar_one_or_none()
            if campaign is None:
                return []
            settings = CampaignSettings.model_validate(campaign.settings)
            if await self._should_stop(session, campaign, settings, now):
                return []
            agent = await session.get(Agent, settings.agent_id) if settings.agent_id else None
            profile = AgentProfile.model_validate(agent.profile) if agent else None  # once a pass, not a dial
            if settings.agent_id and agent is None:
                campaign.status = CampaignStatus.PAUSED.value
                campaign.status_reason = f"its agent {settings.agent_id} no longer exists: choose another, then resume"
                return []
            today = now.astimezone(zone(settings.timezone)).date().isoformat()
            if campaign.dial_day != today:
                campaign.dial_day, campaign.dials_today = today, 0
            in_flight = await session.scalar(
                select(func.count()).where(Contact.campaign_id == campaign_id, Contact.state.in_(IN_FLIGHT))
            )
            slots = settings.max_concurrent_calls - in_flight
            if settings.daily_cap is not None:
                slots = min(slots, settings.daily_cap - campaign.dials_today)
            # Pacing: dials go out 1/calls_per_second apart; claim only those due within the next second.
            first_at = max(now, campaign.next_dial_at or now)
            spacing = timedelta(seconds=1 / settings.calls_per_second)
            horizon = now + timedelta(seconds=1)
            paced = 0 if first_at > horizon else max(int(first_at <= now), math.floor((horizon - first_at) / spacing))
            slots = min(slots, paced)
            if slots <= 0:
                return []
            candidates = await self._due_contacts(session, campaign_id, now, limit=slots * 4)
            if not candidates:
                if in_flight == 0 and not await self._any_left(session, campaign_id):
                    campaign.status, campaign.status_reason = CampaignStatus.COMPLETED.value, "every contact is done"
                    logger.info(f"Campaign {campaign.name} ({campaign_id}) completed: every contact is done")
                return []
            blocked = await do_not_call.listed(session, [c.phone for c in candidates])
            dials: list[Dial] = []
            for contact in candidates:
                if contact.phone in blocked:
                    contact.state, contact.done_reason, contact.updated_at = ContactState.DONE.value, DoneReason.DO_NOT_CALL, now
                elif not is_open(settings.calling_windows, contact.timezone, now):
                    contact.next_attempt_at = next_opening(settings.calling_windows, contact.timezone, now)
                elif len(dials) < slots:
                    dial = self._prepare(
                        session, campaign, settings, agent, profile, contact, at=first_at + len(dials) * spacing, now=now
                    )
                    if dial:
                        dials.append(dial)
            campaign.next_dial_at = first_at + len(dials) * spacing if dials else campaign.next_dial_at
            campaign.dials_today += len(dials)
            return dials

    async def _due_contacts(self, session: AsyncSession, campaign_id: str, now: datetime, limit: int) -> list[Contact]:
        query = (
            select(Contact)
            .where(Contact.campaign_id == campaign_id, Contact.state == ContactState.PENDING, Contact.next_attempt_at <= now)
            .order_by(Contact.next_attempt_at, Contact.id)
            .limit(limit)
        )
        return list((await session.execute(for_update(session, query, skip_locked=True))).scalars())

    @staticmethod
    async def _any_left(session: AsyncSession, campaign_id: str) -> bool:
        left = select(Contact.id).where(Contact.campaign_id == campaign_id, Contact.state != ContactState.DONE).limit(1)
        return (await session.execute(left)).first() is not None

    async def _should_stop(self, session: AsyncSession, campaign: Campaign, settings: CampaignSettings, now: datetime) -> bool:
        """Whether the campaign must not dial now: before its start date, past its end date, or tripped."""
        local_date = now.astimezone(zone(settings.timezone)).date()
        if settings.start_date and local_date < settings.start_date:
            return True
        if settings.end_date and local_date > settings.end_date:
            campaign.status = CampaignStatus.COMPLETED.value
            campaign.status_reason = f"the end date {settings.end_date} has passed"
            return True
        reason = await self._breaker_reason(session, campaign)
        if reason:
            campaign.status, campaign.status_reason = CampaignStatus.PAUSED.value, reason
            logger.error(f"Campaign {campaign.name} ({campaign.id}) paused: {reason}")
            return True
        return False

    async def _breaker_reason(self, session: AsyncSession, campaign: Campaign) -> str | None:
        """Why the circuit breaker trips, if it does: too many of the recent calls failed."""
        recent = (
            select(CallRecord.status, CallRecord.error)
            .where(CallRecord.campaign_id == campaign.id, CallRecord.status.in_(FINAL_STATUSES))
            .order_by(CallRecord.created_at.desc())
            .limit(BREAKER_WINDOW)
        )
        if campaign.running_since:
            recent = recent.where(CallRecord.created_at >= campaign.running_since)
        ended = (await session.execute(recent)).all()
        failed = [error for status, error in ended if status == "failed"]
        if len(ended) < BREAKER_MIN_CALLS or len(failed) / len(ended) < BREAKER_FAILURE_RATE:
            return None
        last_error = next((error for error in failed if error), "Twilio reported the calls as failed")
        return (
            f"circuit breaker: {len(failed)} of the last {len(ended)} calls failed (last error: {last_error}). "
            f"Fix the cause, then resume the campaign"
        )

    def _prepare(
        self, session: AsyncSession, campaign: Campaign, settings: CampaignSettings, agent: Agent | None,
        profile: AgentProfile | None, contact: Contact, at: datetime, now: datetime,
    ) -> Dial | None:
        """Claim the contact: its call record is written and it moves to `dialing`."""
        numbers = settings.from_numbers or [self.settings.twilio_phone_number]
        from_number = numbers[campaign.next_from_index % len(numbers)]
        script = settings.script_for(contact.variables)
        if profile:
            script = script_with_agent(profile, script)
        try:
            config = render_call_config(
                self.settings, script, call_id=str(uuid.uuid4()), to_number=contact.phone, from_number=from_number
            )
            if agent:
                config = config_with_agent(config, profile, agent.id, agent.version)
        except prompts.TemplateError as e:
            logger.warning(f"Contact {contact.id} of campaign {campaign.id} cannot be called: {e}")
            contact.state, contact.done_reason, contact.updated_at = ContactState.DONE.value, DoneReason.INVALID, now
            return None
        campaign.next_from_index += 1
        session.add(
            CallStore.new_record(
                config,
                variables=script.variables,
                metadata={"campaign_id": campaign.id, "contact_id": contact.id},
                created_at=now,
                campaign_id=campaign.id,
                contact_id=contact.id,
            )
        )
        contact.state, contact.current_call_id, contact.updated_at = ContactState.DIALING.value, config.call_id, now
        contact.attempts += 1
        return Dial(campaign.id, config, at)

    # --- dialing -------------------------------------------------------------------------------

    async def _dial(self, dial: Dial) -> None:
        wait = (dial.at - self.clock.now()).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.greetings:
            self.greetings.prepare(dial.config)
        try:
            call_sid = await make_twilio_call(self.twilio, self.settings, dial.config)
        except TwilioCallError as e:
            logger.warning(f"Campaign dial to {dial.config.to_number} refused: {e.message} (Twilio code {e.twilio_code})")
            await self.store.dial_refused(dial.config.call_id, f"{e.message} (Twilio code {e.twilio_code})")
            return
        await self.store.dialed(dial.config.call_id, call_sid)
