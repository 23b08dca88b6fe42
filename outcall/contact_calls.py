"""What a campaign call's progress means for its contact: the slot, a retry, a callback, or done.

The call store runs `follow_call` in the same transaction as every change to a campaign call's
record, so a contact can never disagree with its call: a crash between the two is impossible,
and a repeated webhook changes nothing the second time.
"""

from datetime import datetime, timedelta

from loguru import logger
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outcall.calling_windows import zone
from outcall.campaigns import CampaignSettings
from outcall.database import for_update
from outcall.models import Campaign, CallRecord, Contact, ContactState

MAX_ATTEMPTS = 10  # callbacks included: a contact is never called more often than this
CALLBACK_OUTCOME = "callback_requested"
DO_NOT_CALL_OUTCOME = "do_not_call"


class DoneReason:
    ANSWERED = "answered"
    DO_NOT_CALL = "do-not-call"
    ATTEMPTS_EXHAUSTED = "attempts-exhausted"
    INVALID = "invalid"  # its variables do not fill the campaign's templates


async def follow_call(
    session: AsyncSession, record: CallRecord, now: datetime, attempted: bool = True
) -> bool:
    """Bring the contact of `record` (a campaign call) up to date with it; True when that freed
    the campaign's slot. A call that was not `attempted` (it never reached Twilio) gives the
    contact its attempt back, due at once."""
    query = for_update(session, select(Contact).where(Contact.id == record.contact_id))
    contact = (await session.execute(query)).scalar_one_or_none()
    if contact is None:
        return False  # its campaign was deleted
    current = contact.current_call_id == record.id
    if current and contact.state == ContactState.DIALING and record.call_sid:
        contact.state, contact.updated_at = ContactState.CALLING.value, now
    if current and not attempted:
        contact.current_call_id, contact.attempts = None, contact.attempts - 1
        _pending(contact, now, now)
        return True
    if current and record.is_final:
        contact.current_call_id, contact.last_call_id = None, record.id
        contact.last_end_reason = record.end_reason
        await _after_call(session, contact, record, now)
        return True
    if contact.last_call_id == record.id:  # the bot's report came after Twilio's end
        contact.last_end_reason = record.end_reason
        if contact.state == ContactState.DONE:
            await _after_call(session, contact, record, now)
    return False


async def _after_call(session: AsyncSession, contact: Contact, record: CallRecord, now: datetime) -> None:
    if record.outcome == DO_NOT_CALL_OUTCOME:
        return _done(contact, DoneReason.DO_NOT_CALL, now)
    campaign = await session.get(Campaign, contact.campaign_id)
    settings = CampaignSettings.model_validate(campaign.settings)
    if contact.done_reason not in (None, DoneReason.ANSWERED):
        return
    if record.outcome == CALLBACK_OUTCOME and contact.attempts < MAX_ATTEMPTS:
        at = callback_time(record.callback_time, contact.timezone, now)
        logger.info(f"Contact {contact.id}: callback requested ({record.callback_time!r}), scheduled for {at.isoformat()}")
        return _pending(contact, at, now)
    retry = settings.retry.for_end_reason(record.end_reason)
    if retry is None:
        return _done(contact, DoneReason.ANSWERED, now)
    if contact.attempts >= min(retry.max_attempts, MAX_ATTEMPTS):
        return _done(contact, DoneReason.ATTEMPTS_EXHAUSTED, now)
    _pending(contact, now + timedelta(seconds=retry.delay_secs), now)


def callback_time(requested: str | None, timezone: str, now: datetime) -> datetime:
    """When to call back: the ISO 8601 time the callee asked for (local to them unless it says
    otherwise), or a day from now if it cannot be read. Calling windows still apply."""
    try:
        at = datetime.fromisoformat((requested or "").strip())
    except ValueError:
        return now + timedelta(days=1)
    if at.tzinfo is None:
        at = at.replace(tzinfo=zone(timezone))
    return max(at, now)


def _pending(contact: Contact, at: datetime, now: datetime) -> None:
    contact.state, contact.next_attempt_at, contact.done_reason, contact.updated_at = ContactState.PENDING.value, at, None, now


def _done(contact: Contact, reason: str, now: datetime) -> None:
    contact.state, contact.done_reason, contact.updated_at = ContactState.DONE.value, reason, now
