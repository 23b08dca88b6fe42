"""A deploy drops no calls: SIGTERM to a real server process (`server.py`) with calls in progress.

The server stops taking dials (503 with Retry-After, /health 503, no campaign dial), gives the
calls SHUTDOWN_DRAIN_SECS, then each bot says goodbye and hangs up through Twilio, its record
ends with `server-shutdown` and its final report, and the process exits soon after.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from outcall.call_store import CallStore
from outcall.database import Database
from tests.campaign_helpers import ALL_DAY
from tests.conftest import ACCOUNT_SID, API_KEY, AUTH_TOKEN, OUR_NUMBER, free_port

ROOT = Path(__file__).resolve().parent.parent
DRAIN_SECS = 2
CALLEES = ["+14155552671", "+14155552672", "+14155552673"]


def server_environment(vendors, port: int, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PORT": str(port),
        "SERVER_URL": f"http://127.0.0.1:{port}",
        "DIALOUT_API_KEY": API_KEY,
        "STREAM_SECRET": "shutdown-test-secret",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_PHONE_NUMBER": OUR_NUMBER,
        "TWILIO_API_BASE_URL": vendors.twilio.base_url,
        "DEEPGRAM_API_KEY": "dg-key",
        "DEEPGRAM_BASE_URL": vendors.deepgram.base_url,
        "GOOGLE_API_KEY": "google-key",
        "GOOGLE_API_BASE_URL": vendors.gemini.base_url,
        "CARTESIA_API_KEY": "cartesia-key",
        "CARTESIA_URL": vendors.cartesia.url,
        "CARTESIA_API_URL": vendors.cartesia.api_url,
        "DATABASE_URL": database_url,
        "TURN_STOP": "speech_timeout",
        "IDLE_TIMEOUT_SECS": "60",
        "SHUTDOWN_DRAIN_SECS": str(DRAIN_SECS),
        "LOG_LEVEL": "INFO",
    }


async def start_server_process(vendors, tmp_path: Path) -> tuple[subprocess.Popen, str, str, Path]:
    port = free_port()
    database_url = f"sqlite+aiosqlite:///{tmp_path}/outcall.db"
    log = tmp_path / "server.log"
    process = subprocess.Popen(
        [sys.executable, "server.py"], cwd=ROOT, env=server_environment(vendors, port, database_url),
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    return process, url, database_url, log
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    process.kill()
    raise AssertionError(f"server did not start: {log.read_text()[-3000:]}")


async def test_sigterm_with_three_calls_in_progress_ends_each_politely_then_exits(vendors, tmp_path):
    async def callee(call):  # listens, says nothing, stays on the line
        await call.wait_for_bot_to_speak()
        await asyncio.Event().wait()

    vendors.twilio.callee = callee
    process, url, database_url, log = await start_server_process(vendors, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": API_KEY}, timeout=10) as client:
            # A campaign is running, with a contact that is not yet due: nothing may dial it now.
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

            while process.poll() is None and time.monotonic() - signalled < DRAIN_SECS + 20:
                await asyncio.sleep(0.1)
        exited_after = time.monotonic() - signalled
        # Uvicorn re-raises the signal it shut down for, once done: the usual status of a SIGTERMed process.
        assert process.returncode in (0, -signal.SIGTERM), log.read_text()[-3000:]
    finally:
        if process.poll() is None:
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
