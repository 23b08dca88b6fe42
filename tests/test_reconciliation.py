"""Every call's record ends: reconciliation with Twilio when callbacks are lost, and `bot-lost`
when a bot dies without its final report (the server SIGKILLed mid-call, then restarted)."""

import asyncio
import signal
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from outcall.call_store import CallStore
from outcall.database import Database
from tests.campaign_helpers import ALL_DAY, contacts, new_campaign, wait_for
from tests.conftest import MovableClock, RunningServer, free_port, make_settings, speech, start_server_process
from tests.test_campaign_instances import running, shut_down


@pytest.fixture
def server_clock():
    return MovableClock(datetime.now(UTC))


async def test_a_call_whose_callbacks_never_arrive_is_settled_through_twilio(server, vendors, server_clock):
    vendors.twilio.lost_callbacks = {"initiated", "ringing", "in-progress", "completed"}

    async def callee(call):
        await call.wait_for_bot_to_speak()
        await call.say(speech("thanks_goodbye"))

    vendors.twilio.callee = callee
    vendors.deepgram.transcripts = ["ok goodbye"]
    placed = (await server.dialout({"to_number": "+14155552671"})).json()
    await asyncio.wait_for(vendors.twilio.calls[placed["call_sid"]].ended.wait(), 20)
    record = await server.record(placed["call_id"], until=lambda r: r["summary"] or r["end_reason"])
    assert record["status"] == "in-progress" and record["end_reason"] == "bot-ended"  # Twilio's end never came

    server_clock.advance(timedelta(minutes=2))  # reconciliation looks at calls quiet for a minute
    record = await server.record(placed["call_id"], until=lambda r: r["status"] == "completed", timeout=10)
    assert record["end_reason"] == "bot-ended" and record["talk_secs"] is not None
    assert [t["status"] for t in record["timeline"]][-1] == "completed"


async def test_a_server_killed_mid_call_closes_the_record_as_bot_lost_after_restart(vendors, tmp_path):
    held = asyncio.Event()

    async def callee(call):  # on the line, silent, until the bot goes away
        await call.wait_for_bot_to_speak()
        await held.wait()

    vendors.twilio.callee = callee
    database_url = f"sqlite+aiosqlite:///{tmp_path}/outcall.db"
    settings = make_settings(vendors, free_port(), database_url=database_url, idle_timeout_secs=60)
    doomed = await start_server_process(settings)
    async with httpx.AsyncClient(base_url=settings.server_url, timeout=30) as client:
        server = RunningServer(settings, settings.server_url, client)
        campaign_id = await new_campaign(server, "phone\n+12125550301\n", calling_windows=ALL_DAY, allow_outside_legal_hours=True)
        await server.post(f"/campaigns/{campaign_id}/start")
        await wait_for(lambda: vendors.twilio.calls and next(iter(vendors.twilio.calls.values())).first_voiced_at(),
                       what="the bot greeting the callee")
        call = next(iter(vendors.twilio.calls.values()))
    doomed.send_signal(signal.SIGKILL)  # the bot dies with it: no goodbye, no final report
    await doomed.wait()
    await asyncio.wait_for(call.ended.wait(), 10)  # the stream closed, so Twilio's <Connect> ended the call

    clock = MovableClock(datetime.now(UTC) + timedelta(minutes=2))  # the call is a minute past "open"
    restarted, *rest = await running(settings, clock)
    try:
        call_id = call.custom_parameters["call_id"]
        record = await restarted.record(call_id, until=lambda r: r["status"] == "completed", timeout=15)  # from Twilio
        assert record["end_reason"] is None  # the bot may still report: it gets a minute
        clock.advance(timedelta(minutes=2))
        record = await restarted.record(call_id, until=lambda r: r["end_reason"], timeout=15)
        state = (await contacts(restarted, campaign_id))["+12125550301"]
    finally:
        await shut_down(restarted, *rest)
    assert (record["status"], record["end_reason"]) == ("completed", "bot-lost")
    assert "final report" in record["error"]
    assert state["state"] == "done" and state["last_end_reason"] == "bot-lost"  # never left `calling`
    database = Database(database_url)
    assert (await CallStore(database).get(call_id)).ended_event_sent  # call.ended, once
    await database.close()
    held.set()
