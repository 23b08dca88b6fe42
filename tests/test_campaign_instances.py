"""Several server instances dialing one campaign from one PostgreSQL database, and a server
killed mid-dial and restarted: every contact is dialed exactly once, limits hold throughout."""

import asyncio
import signal
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from server import SHUTDOWN_GRACE_SECS
from tests.campaign_helpers import ALL_DAY, campaign, contacts, dials_to, new_campaign, wait_for
from tests.conftest import MovableClock, RunningServer, free_port, make_settings, start_server, start_server_process

ONCE = {"no_answer": {"max_attempts": 1, "delay_secs": 60}, "busy": {"max_attempts": 1, "delay_secs": 60}}


async def running(settings, clock=None):
    uv_server, task = await start_server(settings, clock)
    client = httpx.AsyncClient(base_url=settings.server_url, timeout=30)
    return RunningServer(settings, settings.server_url, client), uv_server, task


async def shut_down(server: RunningServer, uv_server, task) -> None:
    await server.client.aclose()
    uv_server.should_exit = True
    await asyncio.wait_for(task, SHUTDOWN_GRACE_SECS + 15)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_instances_dial_a_thousand_contacts_exactly_once_within_the_limit(vendors, database_url):
    numbers = [f"+1212555{n:04d}" for n in range(1000, 2000)]
    vendors.twilio.answer_as.update({n: "no-answer" if n[-1] in "02468" else "busy" for n in numbers})
    vendors.twilio.no_answer_secs = 0.1
    first, *first_rest = await running(make_settings(vendors, free_port(), database_url=database_url, log_level="WARNING"))
    second, *second_rest = await running(make_settings(vendors, free_port(), database_url=database_url, log_level="WARNING"))
    try:
        campaign_id = await new_campaign(
            first, "phone\n" + "\n".join(numbers), calls_per_second=100, max_concurrent_calls=8,
            retry=ONCE, calling_windows=ALL_DAY, allow_outside_legal_hours=True,
        )
        await first.post(f"/campaigns/{campaign_id}/start")
        view = await wait_for(lambda: _completed(second, campaign_id), timeout=180, what="all 1,000 dialed")
    finally:
        await shut_down(first, *first_rest)
        await shut_down(second, *second_rest)

    dialed = [call.to for call in vendors.twilio.calls.values()]
    assert len(dialed) == 1000 and set(dialed) == set(numbers)  # each exactly once
    assert 1 < vendors.twilio.max_simultaneous <= 8  # the limit held at every moment, across both
    by_instance = {port: sum(1 for c in vendors.twilio.calls.values() if f":{port}/" in c.url) for port in (first.settings.port, second.settings.port)}
    assert all(count > 0 for count in by_instance.values()), by_instance  # both instances dialed
    assert view["stats"]["done"] == 1000 and view["stats"]["calls"] == 1000
    assert view["stats"]["end_reasons"] == {"no-answer": 500, "busy": 500}


async def _completed(server, campaign_id):
    view = await campaign(server, campaign_id)
    return view if view["status"] == "completed" else None


async def test_a_server_killed_mid_dial_is_reconciled_after_restart(vendors, tmp_path):
    """A: placed and known; B: placed, but the server died before Twilio's answer arrived;
    C: the server died before Twilio received the dial. All three end up dialed exactly once."""
    a, b, c = "+12125550201", "+12125550202", "+12125550203"
    vendors.twilio.answer_as.update({a: "no-answer", b: "no-answer", c: "busy"})
    vendors.twilio.no_answer_secs = 1.0
    vendors.twilio.create_faults.update({b: "response-lost", c: "request-lost"})
    database_url = f"sqlite+aiosqlite:///{tmp_path}/outcall.db"
    settings = make_settings(vendors, free_port(), database_url=database_url)
    doomed = await start_server_process(settings)
    async with httpx.AsyncClient(base_url=settings.server_url, timeout=30) as client:
        server = RunningServer(settings, settings.server_url, client)
        campaign_id = await new_campaign(
            server, f"phone\n{a}\n{b}\n{c}\n", calls_per_second=20, retry=ONCE,
            calling_windows=ALL_DAY, allow_outside_legal_hours=True,
        )
        await server.post(f"/campaigns/{campaign_id}/start")
        await wait_for(lambda: dials_to(vendors, a) and dials_to(vendors, b), what="A and B placed")
        await asyncio.sleep(0.3)  # C's request is in the air
    doomed.send_signal(signal.SIGKILL)
    await doomed.wait()
    vendors.twilio.create_faults.clear()  # the network is fine again
    await wait_for(lambda: all(call.ended.is_set() for call in vendors.twilio.calls.values()), what="calls ended")

    # The restart comes "two minutes later", so the attempts left in flight are past any dial's duration.
    restarted, *rest = await running(settings, MovableClock(datetime.now(UTC) + timedelta(minutes=2)))
    try:
        view = await wait_for(lambda: _completed(restarted, campaign_id), timeout=30, what="campaign completed")
        state = await contacts(restarted, campaign_id)
        records = {r["to_number"]: r for r in (await restarted.get("/calls", end_reason="no-answer")).json()["calls"]}
    finally:
        await shut_down(restarted, *rest)
    assert (dials_to(vendors, a), dials_to(vendors, b), dials_to(vendors, c)) == (1, 1, 1)
    assert [state[n]["last_end_reason"] for n in (a, b, c)] == ["no-answer", "no-answer", "busy"]
    assert all(state[n]["attempts"] == 1 for n in (a, b, c))  # C's lost dial gave its attempt back
    assert records[b]["call_sid"] and records[b]["status"] == "no-answer"  # found again through Twilio
    assert view["stats"]["end_reasons"] == {"no-answer": 2, "busy": 1, "error": 1}  # + C's abandoned dial

