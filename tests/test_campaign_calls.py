"""A campaign's calls are real conversations: personalised from the contact's CSV columns,
recorded like any call, and their outcomes act on the contact (a callback is scheduled in the
contact's window, `do_not_call` suppresses the number)."""

from datetime import UTC, datetime

import pytest

from tests.campaign_helpers import campaign, contacts, new_campaign, wait_for
from tests.conftest import MovableClock, speech
from tests.fakes.gemini import last_user_text, system_text

ADA, BOB = "+12125550301", "+12125550302"


@pytest.fixture
def server_clock():
    return MovableClock(datetime(2027, 3, 15, 14, 0, tzinfo=UTC))  # Monday 10:00 in New York


def outcome_by_callee(request: dict) -> list[dict]:
    """Ada asks to be called back on Tuesday afternoon; Bob asks never to be called again."""
    last = request["contents"][-1]
    if any("functionResponse" in part for part in last.get("parts", [])):
        return [{"text": "Understood. Goodbye!"}, {"functionCall": {"name": "end_call", "args": {}}}]
    if not last_user_text(request):
        return [{"text": "Hello?"}]
    if "Ada" in system_text(request):
        args = {"outcome": "callback_requested", "callback_time": "2027-03-16T15:30:00", "notes": "busy now"}
    else:
        args = {"outcome": "do_not_call", "notes": "asked to be removed"}
    return [{"functionCall": {"name": "record_outcome", "args": args}}]


async def test_campaign_conversations_schedule_callbacks_and_suppress_numbers(server, vendors, server_clock):
    async def callee(call):
        await call.wait_for_bot_to_speak()
        await call.say(speech("yes_this_is_ada"))

    vendors.twilio.callee = callee
    vendors.gemini.respond = outcome_by_callee
    vendors.deepgram.transcripts = ["yes this is ada", "yes this is ada"]
    campaign_id = await new_campaign(
        server, f"phone,first_name\n{ADA},Ada\n{BOB},Bob\n",
        greeting="Hello {first_name}, this is Acme {company}.", variables={"company": "Dental"},
        max_concurrent_calls=1, calls_per_second=5,
    )
    await server.post(f"/campaigns/{campaign_id}/start")

    async def both_settled():
        state = await contacts(server, campaign_id)
        return state if state[ADA]["state"] == "pending" and state[BOB]["done_reason"] == "do-not-call" else None

    state = await wait_for(both_settled, timeout=60, what="both conversations settled")
    # 15:30 on Tuesday in New York (EDT), inside the window: the callback Ada asked for.
    assert state[ADA]["next_attempt_at"].startswith("2027-03-16T19:30:00")
    assert state[ADA]["attempts"] == 1 and state[ADA]["last_end_reason"] == "bot-ended"
    assert (await server.get(f"/do-not-call/{BOB}")).json()["source"] == "outcome"

    record = (await server.get(f"/calls/{state[ADA]['last_call_id']}")).json()
    assert record["variables"] == {"company": "Dental", "first_name": "Ada"}
    assert record["metadata"]["campaign_id"] == campaign_id
    assert record["transcript"][0]["text"] == "Hello Ada, this is Acme Dental."
    assert (record["outcome"], record["callback_time"]) == ("callback_requested", "2027-03-16T15:30:00")
    view = await campaign(server, campaign_id)
    assert view["status"] == "running"  # Ada is still to be called back
    assert view["stats"]["outcomes"] == {"callback_requested": 1, "do_not_call": 1}
    assert view["stats"]["pickup_rate"] == 1.0 and view["stats"]["average_talk_secs"] is not None

    server_clock.set(datetime(2027, 3, 16, 19, 30, 5, tzinfo=UTC))  # the callback is due
    await wait_for(lambda: sum(1 for c in vendors.twilio.calls.values() if c.to == ADA) == 2, timeout=20)
    assert sum(1 for c in vendors.twilio.calls.values() if c.to == BOB) == 1
