"""A deploy drops no calls: SIGTERM to a real server process (`server.py`) with calls in progress.

The server stops taking dials (503 with Retry-After, /health 503, no campaign dial), gives the
calls SHUTDOWN_DRAIN_SECS, then each bot says goodbye and hangs up through Twilio, its record
ends with `server-shutdown` and its final report, and the process exits soon after.
"""

import asyncio
import signal
import time

import httpx

from outcall.call_store import CallStore
from outcall.database import Database
from tests.campaign_helpers import ALL_DAY
from tests.conftest import API_KEY, free_port, make_settings, start_server_process

DRAIN_SECS = 2
CALLEES = ["+14155552671", "+14155552672", "+14155552673"]


async def test_sigterm_with_three_calls_in_progress_ends_each_politely_then_exits(vendors, tmp_path):
    async def callee(call):  # listens, says nothing, stays on the line
        await call.wait_for_bot_to_speak()
        await asyncio.Event().wait()

    vendors.twilio.callee = callee
    database_url = f"sqlite+aiosqlite:///{tmp_path}/outcall.db"
    settings = make_settings(vendors, free_port(), database_url=database_url, idle_timeout_secs=60,
                             shutdown_drain_secs=DRAIN_SECS, log_level="INFO")
    log = tmp_path / "server.log"
    process = await start_server_process(settings, log)
    url = settings.server_url
    try:
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": API_KEY}, timeout=10) as client:
            # A campaign, given a contact and started once the drain has begun: it must not dial.
            campaign = (await client.post("/campaigns", json={"name": "deploy", "settings": {
                "timezone": "UTC", "calling_windows": ALL_DAY, "allow_outside_legal_hours": True,
                "max_concurrent_calls": 1, "calls_per_second": 0.2}})).json()
            sids = [(await client.post("/dialout", json={"to_number": number})).json()["call_sid"] for number in CALLEES]
            calls = [vendors.twilio.calls[sid] for sid in sids]
            for call in calls:
                await asyncio.wait_for(_greeted(call), 15)

            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            health = await client.get("/health")
            refused = await client.post("/dialout", json={"to_number": "+14155552674"})
            await client.post(f"/campaigns/{campaign['id']}/contacts", content=b"phone\n+14155552675\n",
                              headers={"Content-Type": "text/csv"})
            await client.post(f"/campaigns/{campaign['id']}/start")

            await asyncio.wait_for(process.wait(), DRAIN_SECS + 20)
        exited_after = time.monotonic() - signalled
        # Uvicorn re-raises the signal it shut down for, once done: the usual status of a SIGTERMed process.
        assert process.returncode in (0, -signal.SIGTERM), log.read_text()[-3000:]
    finally:
        if process.returncode is None:
            process.kill()

    assert health.status_code == 503 and health.json() == {"status": "draining"}
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "30"
    assert set(vendors.twilio.calls) == set(sids)  # no new dial, from the API or the campaign
    assert DRAIN_SECS <= exited_after < DRAIN_SECS + 12, exited_after
    for call in calls:
        assert call.hangup_requested_at and call.hangup_requested_at > signalled + DRAIN_SECS - 0.5  # via REST
        assert call.first_voiced_at(after=signalled + DRAIN_SECS - 0.5) is not None  # the goodbye was heard
        assert call.stream_close_code != 1012  # not cut off by the server's shutdown
    database = Database(database_url)
    store = CallStore(database)
    for sid in sids:
        call_id = vendors.twilio.calls[sid].custom_parameters["call_id"]
        record = await store.get(call_id)
        assert (record.status, record.end_reason) == ("completed", "server-shutdown"), (record.status, record.end_reason)
        assert record.final_report_at is not None and record.ended_event_sent
        assert any("end our call" in turn["text"] for turn in record.transcript)
    await database.close()
    assert " ERROR " not in log.read_text(), log.read_text()[-3000:]


async def _greeted(call) -> None:
    while call.first_voiced_at() is None:
        await asyncio.sleep(0.05)
