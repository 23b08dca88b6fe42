"""Campaigns: creation, changes, the lifecycle (start, pause, resume, stop, delete) and stats."""

import uuid

from sqlalchemy import case, delete, func, select

from outcall.campaigns import CampaignSettings, CampaignStats
from outcall.clock import Clock
from outcall.database import Database, for_update, uninterrupted, utcnow
from outcall.models import FINAL_STATUSES, Campaign, CampaignStatus, CallRecord, Contact, ContactState, EndReason

# From which states each action may be taken, and the state it leads to.
TRANSITIONS = {
    "start": ({CampaignStatus.DRAFT}, CampaignStatus.RUNNING),
    "pause": ({CampaignStatus.RUNNING}, CampaignStatus.PAUSED),
    "resume": ({CampaignStatus.PAUSED}, CampaignStatus.RUNNING),
    "stop": ({CampaignStatus.DRAFT, CampaignStatus.RUNNING, CampaignStatus.PAUSED}, CampaignStatus.STOPPED),
}
VOICEMAIL_END_REASONS = (EndReason.VOICEMAIL_LEFT.value, EndReason.VOICEMAIL_SKIPPED.value)


class CampaignError(Exception):
    """A campaign request that cannot be done; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class CampaignStore:
    """All reads and writes of campaigns (contacts arrive through outcall/contact_import.py)."""

    def __init__(self, database: Database, clock: Clock):
        self.database = database
        self.clock = clock

    @uninterrupted
    async def create(self, name: str, settings: CampaignSettings) -> Campaign:
        campaign = Campaign(id=str(uuid.uuid4()), name=name, status=CampaignStatus.DRAFT.value, settings=settings.model_dump(mode="json"))
        async with self.database.write() as session:
            session.add(campaign)
        return campaign

    @uninterrupted
    async def get(self, campaign_id: str) -> Campaign:
        async with self.database.session() as session:
            campaign = await session.get(Campaign, campaign_id)
        if campaign is None:
            raise CampaignError(404, f"No campaign with id {campaign_id!r}")
        return campaign

    @uninterrupted
    async def all(self) -> list[Campaign]:
        async with self.database.session() as session:
            return list((await session.execute(select(Campaign).order_by(Campaign.created_at.desc()))).scalars())

    @uninterrupted
    async def update(self, campaign_id: str, name: str | None, settings: CampaignSettings | None) -> Campaign:
        async with self.database.write() as session:
            campaign = await self._locked(session, campaign_id)
            if campaign.status in (CampaignStatus.STOPPED, CampaignStatus.COMPLETED):
                raise CampaignError(409, f"Campaign {campaign.name!r} is {campaign.status}; it can no longer be changed")
            if name is not None:
                campaign.name = name
            if settings is not None:
                campaign.settings = settings.model_dump(mode="json")
            return campaign

    @uninterrupted
    async def change_status(self, campaign_id: str, action: str) -> Campaign:
        allowed_from, to = TRANSITIONS[action]
        async with self.database.write() as session:
            campaign = await self._locked(session, campaign_id)
            if campaign.status not in allowed_from:
                raise CampaignError(
                    409,
                    f"Cannot {action} campaign {campaign.name!r}: it is {campaign.status}, "
                    f"and {action} applies to a {' or '.join(sorted(allowed_from))} campaign",
                )
            if action == "start" and not await self._has_contacts_to_call(session, campaign_id):
                raise CampaignError(409, f"Campaign {campaign.name!r} has no contacts to call: import contacts first")
            campaign.status = to.value
            campaign.status_reason = "paused by the operator" if action == "pause" else "stopped by the operator" if action == "stop" else None
            if to == CampaignStatus.RUNNING:
                campaign.running_since = utcnow()  # compared with call records' real times
            return campaign

    @uninterrupted
    async def delete(self, campaign_id: str) -> None:
        """Delete a campaign that is not running, with its contacts; its call records are kept."""
        async with self.database.write() as session:
            campaign = await self._locked(session, campaign_id)
            if campaign.status == CampaignStatus.RUNNING:
                raise CampaignError(409, f"Campaign {campaign.name!r} is running: pause or stop it before deleting it")
            await session.execute(delete(Contact).where(Contact.campaign_id == campaign_id))
            await session.delete(campaign)

    @uninterrupted
    async def progress(self, campaign_ids: list[str]) -> dict[str, dict[str, int]]:
        """Contacts per state for each campaign: one query over the contacts' index, for lists."""
        query = (
            select(Contact.campaign_id, Contact.state, func.count())
            .where(Contact.campaign_id.in_(campaign_ids))
            .group_by(Contact.campaign_id, Contact.state)
        )
        counts: dict[str, dict[str, int]] = {campaign_id: {} for campaign_id in campaign_ids}
        async with self.database.session() as session:
            for campaign_id, state, count in await session.execute(query):
                counts[campaign_id][state] = count
        return counts

    @uninterrupted
    async def stats(self, campaign: Campaign) -> CampaignStats:
        async with self.database.session() as session:
            states = dict((await session.execute(
                select(Contact.state, func.count()).where(Contact.campaign_id == campaign.id).group_by(Contact.state)
            )).all())
            done_reasons = dict((await session.execute(
                select(Contact.done_reason, func.count())
                .where(Contact.campaign_id == campaign.id, Contact.state == ContactState.DONE)
                .group_by(Contact.done_reason)
            )).all())
            calls = CallRecord.campaign_id == campaign.id
            end_reasons = dict((await session.execute(
                select(CallRecord.end_reason, func.count()).where(calls, CallRecord.end_reason.is_not(None)).group_by(CallRecord.end_reason)
            )).all())
            outcomes = dict((await session.execute(
                select(CallRecord.outcome, func.count()).where(calls, CallRecord.outcome.is_not(None)).group_by(CallRecord.outcome)
            )).all())
            ended_call = CallRecord.status.in_(FINAL_STATUSES)
            answered = CallRecord.answered_at.is_not(None) & ended_call  # rates count ended calls only
            reached_machine = CallRecord.end_reason.in_(VOICEMAIL_END_REASONS) | CallRecord.answered_by.like("machine%")
            total, ended, picked_up, machines, talk = (await session.execute(
                select(
                    func.count(),
                    func.count(case((ended_call, 1))),
                    func.count(case((answered, 1))),
                    func.count(case((answered & reached_machine, 1))),
                    func.avg(case((answered, CallRecord.talk_secs))),
                ).where(calls)
            )).one()
        return CampaignStats(
            contacts=sum(states.values()),
            pending=states.get(ContactState.PENDING.value, 0),
            in_progress=states.get(ContactState.DIALING.value, 0) + states.get(ContactState.CALLING.value, 0),
            done=states.get(ContactState.DONE.value, 0),
            done_reasons={reason or "unknown": count for reason, count in done_reasons.items()},
            calls=total,
            end_reasons=end_reasons,
            outcomes=outcomes,
            pickup_rate=round(picked_up / ended, 4) if ended else None,
            voicemail_rate=round(machines / picked_up, 4) if picked_up else None,
            average_talk_secs=round(float(talk), 1) if talk is not None else None,
            dials_today=campaign.dials_today,
        )

    @uninterrupted
    async def contacts(self, campaign_id: str, state: str | None, after_id: int | None, limit: int) -> list[Contact]:
        query = select(Contact).where(Contact.campaign_id == campaign_id).order_by(Contact.id).limit(limit)
        if state:
            query = query.where(Contact.state == state)
        if after_id is not None:
            query = query.where(Contact.id > after_id)
        async with self.database.session() as session:
            return list((await session.execute(query)).scalars())

    @uninterrupted
    async def contact(self, campaign_id: str, contact_id: int) -> Contact | None:
        async with self.database.session() as session:
            contact = await session.get(Contact, contact_id)
        return contact if contact is not None and contact.campaign_id == campaign_id else None

    async def _locked(self, session, campaign_id: str) -> Campaign:
        campaign = (await session.execute(for_update(session, select(Campaign).where(Campaign.id == campaign_id)))).scalar_one_or_none()
        if campaign is None:
            raise CampaignError(404, f"No campaign with id {campaign_id!r}")
        return campaign

    @staticmethod
    async def _has_contacts_to_call(session, campaign_id: str) -> bool:
        query = select(Contact.id).where(Contact.campaign_id == campaign_id, Contact.state != ContactState.DONE).limit(1)
        return (await session.execute(query)).first() is not None
