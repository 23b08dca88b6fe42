"""Many calls ending at once while everything that touches their records interleaves and gets
cancelled: Twilio's callbacks (doubled, reordered), the bot's progress reports superseding each
other mid-write, callee hang-ups cancelling whatever was in flight, reconciliation, final reports.

This is the shape of the hang once seen in the suite (a report cancelled mid-statement on SQLite
left a connection holding SQLite's write lock; every later writer waited forever). Every round
must end with every record final, its end reason and final report applied, `call.ended` queued
once, no task left behind, and the database still taking writes at once.
"""

import asyncio
import random
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from outcall.call_store import CallStore
from outcall.database import Database, uninterrupted, utcnow
from outcall.campaigns import CampaignSettings
from outcall.models import IN_FLIGHT, CallEvent, Campaign, CampaignStatus, Contact, ContactState, EndReason
from outcall.reports import CallProgress, CallReporter, TranscriptTurn
from outcall.stream_auth import issue_stream_token
from tests.conftest import speech
from tests.test_storage import SECRET, config

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
ROUNDS = 12
CALLS = 16
ROUND_TIMEOUT_SECS = 30


@pytest.fixture
async def store(database_url):  # the store-level test's own store (the end-to-end one has a server)
    database = Database(database_url)
    await database.migrate()
    yield CallStore(database, events_enabled=True)
    await database.close()


@uninterrupted
async def campaign_call(store: CallStore, campaign_id: str, sid: str) -> str:
    """A campaign contact's call, dialed: its contact follows the record in every write."""
    call = config()
    async with store.database.write() as session:
        if await session.get(Campaign, campaign_id) is None:
            session.add(Campaign(id=campaign_id, name="stress", status=CampaignStatus.RUNNING.value,
                                 settings=CampaignSettings(timezone="UTC").model_dump(mode="json")))
            await session.flush()
        contact = Contact(campaign_id=campaign_id, phone=f"+1555{sid[2:]}", variables={}, timezone="UTC",
                          state=ContactState.DIALING.value, next_attempt_at=utcnow(), attempts=1,
                          current_call_id=call.call_id)
        session.add(contact)
        await session.flush()
        session.add(CallStore.new_record(call, variables={}, metadata={}, created_at=utcnow(),
                                         campaign_id=campaign_id, contact_id=contact.id))
    return call.call_id


async def answered_and_claimed(store: CallStore, campaign_id: str, sid: str) -> str:
    call_id = await campaign_call(store, campaign_id, sid)
    await store.dialed(call_id, sid)
    await store.answered(call_id, sid)
    record = await store.get(call_id)
    token = issue_stream_token(SECRET, call_id=call_id, call_sid=sid, to_number=record.to_number,
                               from_number=record.from_number, ttl_secs=60)
    await store.claim(call_id, token, SECRET, 3600)
    return call_id


async def twilio_callbacks(store: CallStore, call_id: str, sid: str, rng: random.Random) -> None:
    """Status callbacks as Twilio sends them: late, doubled, out of order."""
    statuses = ["ringing", "in-progress", "completed", "completed", "ringing"]
    rng.shuffle(statuses)
    for status in statuses:
        await asyncio.sleep(rng.random() * 0.01)
        await store.apply_status(call_id, sid, status, utcnow(), call_duration=5 if status == "completed" else None)


async def bot(store: CallStore, call_id: str, rng: random.Random, hang_ups: list[asyncio.Task]) -> None:
    """The in-process bot: a conversation whose progress reports supersede (cancel) each other,
    cut short when the callee hangs up (the test cancels it), then the final report."""
    progress = CallProgress()
    reporter = CallReporter(lambda report: store.apply_report(call_id, report), call_id, retry_delays=(0.05,))
    conversation = asyncio.create_task(talk(progress, reporter, rng))
    hang_ups.append(conversation)
    await asyncio.wait([conversation])
    progress.end(EndReason.CALLEE_HUNG_UP if conversation.cancelled() else EndReason.BOT_ENDED)
    assert await reporter.report_final(progress.report())


async def talk(progress: CallProgress, reporter: CallReporter, rng: random.Random) -> None:
    for turn in range(rng.randint(2, 6)):
        progress.transcript.append(TranscriptTurn(speaker="callee", text=f"line {turn}", started_at=utcnow()))
        reporter.report_progress(progress.report())
        await asyncio.sleep(rng.random() * 0.0015)


async def reconciliation(store: CallStore, call_id: str, sid: str, rng: random.Random) -> None:
    await asyncio.sleep(rng.random() * 0.02)
    await store.apply_status(call_id, sid, "completed", utcnow() + timedelta(seconds=1), call_duration=6)


@uninterrupted
async def contacts_in_flight(store: CallStore, call_ids: list[str]) -> int:
    async with store.database.session() as session:
        query = select(func.count()).where(Contact.last_call_id.in_(call_ids), Contact.state.in_(IN_FLIGHT))
        return await session.scalar(query)


@uninterrupted
async def ended_events(store: CallStore, call_ids: list[str]) -> int:
    async with store.database.session() as session:
        query = select(func.count()).where(CallEvent.call_id.in_(call_ids), CallEvent.type == "call.ended")
        return await session.scalar(query)


async def test_calls_ending_together_under_cancellation_all_end_their_records(store):
    rng = random.Random(20261201)
    for round_number in range(ROUNDS):
        sids = [f"CA{round_number:02d}{i:03d}" for i in range(CALLS)]
        call_ids = [await answered_and_claimed(store, "c1", sid) for sid in sids]
        conversations: list[asyncio.Task] = []
        bots = [asyncio.create_task(bot(store, call_id, rng, conversations)) for call_id in call_ids]
        callbacks = [asyncio.create_task(twilio_callbacks(store, call_id, sid, rng)) for call_id, sid in zip(call_ids, sids)]
        reconciling = [asyncio.create_task(reconciliation(store, call_id, sid, rng)) for call_id, sid in zip(call_ids, sids)]
        await asyncio.sleep(0)
        # Callee hang-ups cut half the conversations short; a few webhook requests are dropped
        # mid-way (their tasks cancelled); some cancellations arrive twice.
        for task in rng.sample(conversations, CALLS // 2) + rng.sample(callbacks, CALLS // 4):
            await asyncio.sleep(rng.random() * 0.003)
            task.cancel()
            if rng.random() < 0.3:
                await asyncio.sleep(0)
                task.cancel()
        others = callbacks + reconciling
        done, pending = await asyncio.wait(bots + others, timeout=ROUND_TIMEOUT_SECS)
        assert not pending, f"round {round_number}: {len(pending)} tasks never finished: {[t.get_stack() for t in pending][:2]}"
        for task in done:
            assert task.cancelled() or task.exception() is None, task.exception()

        records = [await store.get(call_id) for call_id in call_ids]
        assert all(r.status == "completed" and r.final_report_at and r.end_reason for r in records), [
            (r.status, r.final_report_at, r.end_reason) for r in records if not (r.final_report_at and r.end_reason)
        ]
        assert all(r.ended_event_sent for r in records)
        assert await contacts_in_flight(store, call_ids) == 0
        assert await ended_events(store, call_ids) == CALLS
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if left:
            await asyncio.wait(left, timeout=5)  # superseded reports already cancelled finish unwinding
        assert all(t.done() for t in left), f"round {round_number}: tasks left behind: {left}"
        # And the database takes a write at once.
        await asyncio.wait_for(answered_and_claimed(store, "c1", f"CA{round_number:02d}9999"), timeout=5)


END_TO_END_CALLS = 8


async def test_real_calls_hung_up_at_random_moments_all_end_their_records(vendors, server, database_url):
    """The same through the whole server: eight calls at once, each callee hanging up at a random
    moment (before the greeting, mid-reply, after its own line), callbacks doubled."""
    rng = random.Random(7)
    vendors.twilio.duplicate_callbacks = True
    vendors.deepgram.transcripts = ["yes this is ada"] * END_TO_END_CALLS
    vendors.gemini.respond = lambda request: [{"text": "Thank you. I am calling about your appointment next week, "
                                                       "and I have a few details to go through with you."}]
    delays = {f"+1415555{2600 + i}": rng.uniform(0.0, 3.0) for i in range(END_TO_END_CALLS)}

    async def callee(call):
        await asyncio.sleep(delays[call.to] / 3)
        if delays[call.to] > 1:
            await call.say(speech("yes_this_is_ada"))
        await asyncio.sleep(delays[call.to])
        await call.hang_up()

    vendors.twilio.callee = callee
    placed = [(await server.dialout({"to_number": number})).json() for number in delays]
    records = [await server.record(body["call_id"], until=lambda r: r["end_reason"] and r["status"] == "completed", timeout=40)
               for body in placed]
    assert all(r["end_reason"] == "callee-hung-up" for r in records), [r["end_reason"] for r in records]
    for body in placed:
        await vendors.twilio.calls[body["call_sid"]].settled()
    database = Database(database_url)  # what the API does not show: every bot's final report arrived
    store = CallStore(database)
    try:
        assert all([(await store.get(body["call_id"])).final_report_at for body in placed])
    finally:
        await database.close()
