"""The call store on SQLite and PostgreSQL: migrations, idempotent callbacks, one claim, pagination."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import select, text, update

from outcall.call_events import CallEventDelivery
from outcall.call_store import CallFilter, CallStore
from outcall.calls import CallClaimError, CallConfig
from outcall.database import Database, alembic_config, uninterrupted
from outcall.models import CallEvent, utcnow
from outcall.reports import CallReport, TranscriptTurn
from outcall.stream_auth import issue_stream_token

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
SECRET = "store-test-secret"
T0 = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)


@pytest.fixture
async def database(database_url):
    database = Database(database_url)
    await database.migrate()
    yield database
    await database.close()


@pytest.fixture
def store(database) -> CallStore:
    return CallStore(database, events_enabled=True)


def config(call_id: str | None = None) -> CallConfig:
    return CallConfig(
        call_id=call_id or str(uuid.uuid4()),
        to_number="+14155552671",
        from_number="+14155550100",
        system_instruction="Be brief.",
        greeting="Hello!",
        wait_for_callee=False,
        max_duration_secs=600,
    )


async def placed_call(store: CallStore, sid: str = "CA1") -> str:
    call = config()
    await store.create(call, variables={"name": "Ada"}, metadata={"crm": 7})
    await store.dialed(call.call_id, sid)
    return call.call_id


@uninterrupted
async def events_of(database: Database, call_id: str) -> list[str]:
    async with database.session() as session:
        rows = await session.execute(select(CallEvent.type).where(CallEvent.call_id == call_id).order_by(CallEvent.created_at))
        return list(rows.scalars())


async def test_migrations_are_repeatable_and_safe_to_run_concurrently(database_url):
    first, second = Database(database_url), Database(database_url)
    if first.is_postgresql:
        await asyncio.gather(first.migrate(), second.migrate())  # two instances starting together
    else:  # SQLite serves one instance (documented)
        await first.migrate()
        await second.migrate()
    await first.migrate()
    async with first.engine.connect() as connection:
        version = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head() == "0010"
    await first.close()
    await second.close()


async def test_status_callbacks_in_any_order_and_repeated_end_the_same(store, database):
    call_id = await placed_call(store)
    deliveries = [
        ("initiated", 0), ("completed", 47), ("ringing", 2),  # ringing arrives after completed
        ("in-progress", 5), ("completed", 47), ("ringing", 2),  # and duplicates
        ("busy", 50),  # a second, different final status cannot replace the first
    ]
    for status, second in deliveries:
        await store.apply_status(call_id, "CA1", status, T0 + timedelta(seconds=second), call_duration=42)
    record = await store.get(call_id)
    assert record.status == "completed"
    assert [c["status"] for c in record.timeline] == ["queued", "initiated", "ringing", "in-progress", "completed"]
    assert (record.ring_secs, record.talk_secs) == (3.0, 42.0)
    assert record.answered_at == T0 + timedelta(seconds=5)
    # Answered but no bot ever claimed the stream: that is an error, said plainly.
    assert record.end_reason == "error" and "no bot" in record.error
    assert await events_of(database, call_id) == ["call.initiated", "call.ended"]


async def test_a_callback_for_another_calls_sid_changes_nothing(store):
    call_id = await placed_call(store, sid="CA1")
    assert await store.apply_status(call_id, "CA-other", "completed", T0) is None
    assert (await store.get(call_id)).status == "queued"


async def test_an_unanswered_call_ends_from_the_callback_alone(store, database):
    call_id = await placed_call(store)
    await store.apply_status(call_id, "CA1", "ringing", T0)
    await store.apply_status(call_id, "CA1", "no-answer", T0 + timedelta(seconds=30))
    record = await store.get(call_id)
    assert (record.status, record.end_reason, record.ring_secs, record.talk_secs) == ("no-answer", "no-answer", 30.0, None)
    assert await events_of(database, call_id) == ["call.initiated", "call.ended"]


async def test_a_call_is_claimed_once_even_by_racing_instances(database_url, database):
    stores = [CallStore(database), CallStore(Database(database_url))]
    call_id = await placed_call(stores[0])
    assert await stores[0].answered(call_id, "CA1") is not None
    token = issue_stream_token(SECRET, call_id=call_id, call_sid="CA1", to_number="+14155552671",
                               from_number="+14155550100", ttl_secs=60)
    results = await asyncio.gather(
        *(stores[i % 2].claim(call_id, token, SECRET, 3600) for i in range(10)), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, CallConfig)]
    assert len(won) == 1 and won[0].report_token
    assert {r.status for r in results if isinstance(r, CallClaimError)} == {409}
    await stores[1].database.close()


async def test_reports_apply_once_and_in_order_and_end_the_call_after_twilio_does(store, database):
    call_id = await placed_call(store)
    await store.answered(call_id, "CA1")
    token = issue_stream_token(SECRET, call_id=call_id, call_sid="CA1", to_number="+14155552671",
                               from_number="+14155550100", ttl_secs=60)
    await store.claim(call_id, token, SECRET, 3600)
    turn = TranscriptTurn(speaker="callee", text="hello", started_at=T0)
    reply = TranscriptTurn(speaker="bot", text="hi", started_at=T0, latency_ms=640)
    await store.apply_report(call_id, CallReport(sequence=1, transcript=[turn, reply]))
    await store.apply_report(call_id, CallReport(sequence=0, transcript=[turn]))  # late, older
    await store.apply_report(call_id, CallReport(sequence=1, transcript=[turn, reply]))  # retried
    record = await store.get(call_id)
    assert [t["text"] for t in record.transcript] == ["hello", "hi"] and record.latencies_ms == [640]

    await store.apply_status(call_id, "CA1", "completed", T0 + timedelta(seconds=9), call_duration=9)
    assert "call.ended" not in await events_of(database, call_id)  # waits for the bot's last word
    final = CallReport(sequence=2, final=True, transcript=[turn, reply], summary="Short.", end_reason="callee-hung-up")
    await store.apply_report(call_id, final)
    await store.apply_report(call_id, final)
    record = await store.get(call_id)
    assert (record.end_reason, record.summary, record.status) == ("callee-hung-up", "Short.", "completed")
    assert (await events_of(database, call_id)).count("call.ended") == 1


async def test_listing_pages_through_every_call_once_newest_first(store, database):
    ids = [await placed_call(store, sid=f"CA{i}") for i in range(23)]
    for call_id in ids[:5]:
        await store.apply_status(call_id, "CA" + str(ids.index(call_id)), "busy", T0)
    seen, cursor = [], None
    while True:
        page, cursor = await store.list(limit=10, cursor=cursor)
        seen += [r.id for r in page]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    busy, _ = await store.list(CallFilter(status="busy", end_reason="busy"))
    assert sorted(r.id for r in busy) == sorted(ids[:5])
    future, _ = await store.list(CallFilter(created_after=datetime.now(UTC) + timedelta(hours=1)))
    assert future == []
    assert [r.id async for r in store.rows({"id": "id"}, page_size=4)] == list(reversed(ids))
    assert [r.sid async for r in store.rows({"sid": "call_sid"}, CallFilter(status="busy"), page_size=2)] == [
        f"CA{i}" for i in reversed(range(5))
    ]


@uninterrupted
async def age_events(database: Database, call_id: str, days: float, given_up: bool = False) -> None:
    """Pretend the call's events were delivered (or given up on) `days` ago."""
    at = datetime.now(UTC) - timedelta(days=days)
    async with database.write() as session:
        values = {"given_up_at": at} if given_up else {"delivered_at": at}
        await session.execute(update(CallEvent).where(CallEvent.call_id == call_id).values(**values))


async def test_delivered_events_are_pruned_after_the_retention_period_and_failures_kept(store, database):
    old, recent, failed = [await placed_call(store, sid) for sid in ("CA1", "CA2", "CA3")]
    await age_events(database, old, days=8)
    await age_events(database, recent, days=6)
    await age_events(database, failed, days=30, given_up=True)
    delivery = CallEventDelivery(database, "http://127.0.0.1:9/never", "secret", retention_days=7)
    assert await delivery.prune() == 1
    assert (await events_of(database, old), await events_of(database, recent)) == ([], ["call.initiated"])
    assert await events_of(database, failed) == ["call.initiated"]  # given up: kept to be looked at


async def test_the_console_feed_reads_a_burst_of_changes_through_and_each_change_once(store, database):
    from outcall.dashboard.feed import PAGE, CallFeed

    feed = CallFeed(store, summarise=lambda: None)
    assert await feed.changes() == []
    records = [CallStore.new_record(config(), variables={}, metadata={}, created_at=utcnow()) for _ in range(PAGE * 2 + 50)]

    @uninterrupted
    async def write_all():
        async with database.write() as session:
            session.add_all(records)

    await write_all()  # more changes in one moment than one query reads
    assert sorted(r.id for r in await feed.changes()) == sorted(r.id for r in records)
    assert await feed.changes() == []  # nothing is sent twice
    await store.dialed(records[0].id, "CA-burst")
    assert [r.id for r in await feed.changes()] == [records[0].id]
