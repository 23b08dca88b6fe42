"""The dispatcher on a moved clock: calling windows in each contact's time zone (across a
daylight-saving change), retries by end reason, the daily cap, pacing, do-not-call at dial
time, and pause/resume — all dialed through the Twilio emulator."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.campaign_helpers import campaign, contacts, dials_to, new_campaign, wait_for
from tests.conftest import MovableClock

NY_1, NY_2, NY_3 = "+12125550101", "+12125550102", "+12125550103"
LA_1 = "+14155550101"
# Sunday 14 March 2027: clocks in the US go forward at 02:00; New York is UTC-4 from then on.
DST_SUNDAY_0830_NY = datetime(2027, 3, 14, 12, 30, tzinfo=UTC)


@pytest.fixture
def server_clock():
    return MovableClock(DST_SUNDAY_0830_NY)


async def test_windows_follow_each_contacts_time_zone_across_a_dst_change(server, vendors, server_clock):
    vendors.twilio.answer_as.update({NY_1: "busy", LA_1: "busy"})
    once = {"busy": {"max_attempts": 1, "delay_secs": 60}}
    campaign_id = await new_campaign(server, f"phone\n{NY_1}\n{LA_1}\n", calls_per_second=10, retry=once)
    assert (await server.post(f"/campaigns/{campaign_id}/start")).status_code == 200

    await asyncio.sleep(1)  # 08:30 in New York, 05:30 in Los Angeles: nobody is called
    assert vendors.twilio.calls == {}
    waiting = await contacts(server, campaign_id)
    # 09:00 EDT (UTC-4 since this morning) and 09:00 PDT: the next openings, per zone.
    assert waiting[NY_1]["next_attempt_at"].startswith("2027-03-14T13:00:00")
    assert waiting[LA_1]["next_attempt_at"].startswith("2027-03-14T16:00:00")

    server_clock.set(datetime(2027, 3, 14, 13, 0, 5, tzinfo=UTC))  # 09:00 in New York
    await wait_for(lambda: dials_to(vendors, NY_1) == 1, what="New York dialed at 09:00 EDT")
    await asyncio.sleep(0.5)
    assert dials_to(vendors, LA_1) == 0

    server_clock.set(datetime(2027, 3, 14, 16, 0, 5, tzinfo=UTC))  # 09:00 in Los Angeles
    await wait_for(lambda: dials_to(vendors, LA_1) == 1, what="Los Angeles dialed at 09:00 PDT")
    done = await wait_for(lambda: _status_is(server, campaign_id, "completed"), what="campaign completed")
    assert done["stats"]["end_reasons"] == {"busy": 2}


async def _status_is(server, campaign_id, status):
    view = await campaign(server, campaign_id)
    return view if view["status"] == status else None


async def test_retries_follow_the_policy_for_each_end_reason(server, vendors, server_clock):
    server_clock.set(datetime(2027, 3, 15, 14, 0, tzinfo=UTC))  # Monday 10:00 in New York
    vendors.twilio.answer_as.update({NY_1: "busy", NY_2: "no-answer", NY_3: "failed"})
    vendors.twilio.no_answer_secs = 0.1
    retry = {
        "busy": {"max_attempts": 2, "delay_secs": 900},
        "no_answer": {"max_attempts": 3, "delay_secs": 3600},
        "failed": {"max_attempts": 1, "delay_secs": 60},
    }
    campaign_id = await new_campaign(server, f"phone\n{NY_1}\n{NY_2}\n{NY_3}\n", calls_per_second=10, retry=retry)
    await server.post(f"/campaigns/{campaign_id}/start")

    async def attempts_settled(expected: dict[str, int]):
        # One snapshot says both: a contact's attempts count at its claim, so "pending" with the
        # expected attempts means that attempt has ended (a dial can start while this reads).
        state = await contacts(server, campaign_id)
        await asyncio.sleep(0.3)
        settled = all(c["state"] in ("pending", "done") for c in state.values())
        attempts = {n: state[n]["attempts"] for n in expected}
        return settled and attempts == expected == {n: dials_to(vendors, n) for n in expected} and state

    state = await wait_for(lambda: attempts_settled({NY_1: 1, NY_2: 1, NY_3: 1}))
    assert state[NY_3]["done_reason"] == "attempts-exhausted" and state[NY_3]["last_end_reason"] == "failed"
    assert state[NY_1]["state"] == state[NY_2]["state"] == "pending"

    server_clock.advance(timedelta(seconds=901))  # the busy retry is due; no-answer's is not
    state = await wait_for(lambda: attempts_settled({NY_1: 2, NY_2: 1, NY_3: 1}))
    assert state[NY_1]["done_reason"] == "attempts-exhausted"
    server_clock.advance(timedelta(hours=1))
    await wait_for(lambda: attempts_settled({NY_1: 2, NY_2: 2, NY_3: 1}))
    server_clock.advance(timedelta(hours=1))
    state = await wait_for(lambda: attempts_settled({NY_1: 2, NY_2: 3, NY_3: 1}))
    assert state[NY_2]["done_reason"] == "attempts-exhausted"
    view = await wait_for(lambda: _status_is(server, campaign_id, "completed"))
    assert view["stats"]["end_reasons"] == {"busy": 2, "no-answer": 3, "failed": 1}
    assert view["stats"]["pickup_rate"] == 0.0


async def test_the_daily_cap_holds_until_the_next_local_day(server, vendors, server_clock):
    server_clock.set(datetime(2027, 3, 15, 23, 0, tzinfo=UTC))  # Monday 19:00 in New York
    numbers = [f"+1212555{n:04d}" for n in range(110, 115)]
    vendors.twilio.answer_as.update({n: "busy" for n in numbers})
    retry = {"busy": {"max_attempts": 1, "delay_secs": 60}}
    campaign_id = await new_campaign(server, "phone\n" + "\n".join(numbers), calls_per_second=10, daily_cap=2, retry=retry)
    await server.post(f"/campaigns/{campaign_id}/start")
    await wait_for(lambda: len(vendors.twilio.calls) == 2)
    await asyncio.sleep(1)
    assert len(vendors.twilio.calls) == 2 and (await campaign(server, campaign_id))["stats"]["dials_today"] == 2

    server_clock.set(datetime(2027, 3, 16, 13, 0, 5, tzinfo=UTC))  # Tuesday 09:00 in New York
    await wait_for(lambda: len(vendors.twilio.calls) == 4)
    await asyncio.sleep(1)
    assert len(vendors.twilio.calls) == 4
    assert sorted(c.to for c in vendors.twilio.calls.values()) == numbers[:4]  # in import order


async def test_do_not_call_is_checked_when_dialing_not_only_at_import(server, vendors, server_clock):
    server_clock.set(datetime(2027, 3, 15, 14, 0, tzinfo=UTC))
    vendors.twilio.answer_as.update({NY_1: "busy", NY_2: "busy"})
    once = {"busy": {"max_attempts": 1, "delay_secs": 60}}
    campaign_id = await new_campaign(server, f"phone\n{NY_1}\n{NY_2}\n", calls_per_second=10, retry=once)
    # Added after the import: the dial-time check must catch it.
    assert (await server.post("/do-not-call", {"phones": [NY_2], "reason": "asked by email"})).status_code == 204
    await server.post(f"/campaigns/{campaign_id}/start")
    await wait_for(lambda: _status_is(server, campaign_id, "completed"))
    assert dials_to(vendors, NY_1) == 1 and dials_to(vendors, NY_2) == 0
    assert (await contacts(server, campaign_id))[NY_2]["done_reason"] == "do-not-call"
    refused = await server.dialout({"to_number": NY_2})
    assert refused.status_code == 409 and "do-not-call" in refused.json()["detail"]
    entry = (await server.get(f"/do-not-call/{NY_2}")).json()
    assert (entry["reason"], entry["source"]) == ("asked by email", "api")


async def test_pause_stops_new_dials_and_resume_carries_on(server, vendors, server_clock):
    server_clock.set(datetime(2027, 3, 15, 14, 0, tzinfo=UTC))
    numbers = [f"+1212555{n:04d}" for n in range(120, 126)]
    vendors.twilio.answer_as.update({n: "no-answer" for n in numbers})
    vendors.twilio.no_answer_secs = 0.4
    retry = {"no_answer": {"max_attempts": 1, "delay_secs": 60}}
    campaign_id = await new_campaign(
        server, "phone\n" + "\n".join(numbers), calls_per_second=20, max_concurrent_calls=2, retry=retry
    )
    await server.post(f"/campaigns/{campaign_id}/start")
    await wait_for(lambda: len(vendors.twilio.calls) >= 1)
    paused = await server.post(f"/campaigns/{campaign_id}/pause")
    assert paused.json()["status"] == "paused" and paused.json()["status_reason"] == "paused by the operator"
    dialed_when_paused = len(vendors.twilio.calls)
    await asyncio.sleep(1.5)  # calls under way finish; nothing new starts
    assert len(vendors.twilio.calls) == dialed_when_paused <= 2
    again = await server.post(f"/campaigns/{campaign_id}/pause")
    assert again.status_code == 409 and "paused" in again.json()["detail"]

    await server.post(f"/campaigns/{campaign_id}/resume")
    view = await wait_for(lambda: _status_is(server, campaign_id, "completed"))
    assert sorted(c.to for c in vendors.twilio.calls.values()) == numbers
    assert vendors.twilio.max_simultaneous <= 2
    assert view["stats"]["done"] == 6 and view["stats"]["end_reasons"] == {"no-answer": 6}


async def test_a_failing_campaign_trips_the_circuit_breaker(server, vendors, server_clock):
    server_clock.set(datetime(2027, 3, 15, 14, 0, tzinfo=UTC))
    numbers = [f"+1212555{n:04d}" for n in range(130, 140)]
    # An unverified caller ID: Twilio refuses every dial (21210).
    campaign_id = await new_campaign(
        server, "phone\n" + "\n".join(numbers), calls_per_second=20, max_concurrent_calls=2, from_numbers=["+14155550199"]
    )
    await server.post(f"/campaigns/{campaign_id}/start")
    view = await wait_for(lambda: _status_is(server, campaign_id, "paused"))
    assert "circuit breaker" in view["status_reason"] and "21210" in view["status_reason"]
    await asyncio.sleep(1)
    assert view["stats"]["calls"] < len(numbers)  # it stopped before working through the list
    assert (await campaign(server, campaign_id))["stats"]["calls"] == view["stats"]["calls"]
    assert vendors.twilio.calls == {}  # every dial was refused
