"""Call records end to end: every call, answered or not, leaves a complete, durable record."""

import asyncio
import hmac

import pytest

from outcall.call_events import sign
from tests.conftest import CALLEE_NUMBER, speech
from tests.fakes.gemini import last_user_text
from tests.fakes.webhook_receiver import WebhookReceiver

EVENTS_SECRET = "events-secret"


def outcome_llm(request: dict) -> list[dict]:
    """Records an outcome when the callee confirms, then says goodbye when they do."""
    last = request["contents"][-1]
    if any("functionResponse" in part for part in last.get("parts", [])):
        return [{"text": "Wonderful, you're all set."}]
    heard = last_user_text(request).lower()
    if "goodbye" in heard:
        return [{"text": "Goodbye!"}, {"functionCall": {"name": "end_call", "args": {}}}]
    if "yes" in heard:
        return [{"functionCall": {"name": "record_outcome",
                                  "args": {"outcome": "interested", "notes": "confirmed the visit"}}}]
    return [{"text": "Could you say that again?"}]


@pytest.fixture
async def receiver():
    receiver = await WebhookReceiver(fail_first=1).start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def server_overrides(receiver) -> dict:
    return {"call_events_webhook_url": receiver.url, "call_events_secret": EVENTS_SECRET}


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_conversation_leaves_a_complete_record_and_signed_events(vendors, server, receiver):
    async def callee(call):
        await call.wait_for_bot_to_speak()
        await call.say(speech("yes_this_is_ada"))
        await call.wait_for_bot_to_speak()
        await call.say(speech("thanks_goodbye"))

    vendors.twilio.callee = callee
    vendors.gemini.respond = outcome_llm
    vendors.deepgram.transcripts = ["yes this is ada", "okay thank you goodbye"]
    response = await server.dialout({"to_number": CALLEE_NUMBER, "variables": {"name": "Ada"}, "metadata": {"crm": 7}})
    call_id = response.json()["call_id"]
    call = vendors.twilio.calls[response.json()["call_sid"]]
    await call.settled()

    record = await server.record(call_id, until=lambda r: r["summary"])
    assert record["status"] == "completed"
    assert [c["status"] for c in record["timeline"]] == ["queued", "initiated", "ringing", "in-progress", "completed"]
    assert (record["end_reason"], record["outcome"], record["outcome_notes"]) == ("bot-ended", "interested", "confirmed the visit")
    assert (record["variables"], record["metadata"]) == ({"name": "Ada"}, {"crm": 7})
    turns = [(t["speaker"], t["text"]) for t in record["transcript"]]
    assert turns[0][0] == "bot" and ("callee", "yes this is ada") in turns and turns[-1] == ("bot", "Goodbye!")
    assert record["latencies_ms"] and all(0 < ms < 5000 for ms in record["latencies_ms"])
    assert record["talk_secs"] is not None and record["ring_secs"] is not None
    assert record["summary"] == "The callee spoke with the agent."
    # One post-call request, for the summary only: the outcome was recorded during the call.
    assert len(vendors.gemini.summary_requests) == 1
    assert "yes this is ada" in str(vendors.gemini.summary_requests[0]["contents"])

    # Events: each signed, the first delivery refused and retried, call.ended carrying the record.
    for _ in range(100):
        if "call.ended" in [e["type"] for e in receiver.accepted_events()]:
            break
        await asyncio.sleep(0.1)
    events = {e["type"]: e for e in receiver.accepted_events()}  # a retried event may arrive after later ones
    assert sorted(events) == ["call.answered", "call.ended", "call.initiated"]
    assert len(receiver.deliveries) == 4 and receiver.deliveries[0][2] == 500
    refused_id = receiver.deliveries[0][0]["Outcall-Event-Id"]
    assert [h["Outcall-Event-Id"] for h, _, status in receiver.deliveries if status == 200].count(refused_id) == 1
    for headers, body, _ in receiver.deliveries:
        timestamp = int(headers["Outcall-Signature"].split(",")[0].removeprefix("t="))
        assert headers["Outcall-Signature"] == sign(EVENTS_SECRET, timestamp, body)
        assert not hmac.compare_digest(sign("other", timestamp, body), headers["Outcall-Signature"])
    ended = events["call.ended"]["data"]
    assert ended["id"] == call_id and ended["end_reason"] == "bot-ended" and ended["transcript"]


async def test_callee_hanging_up_mid_sentence_still_leaves_a_complete_record(vendors, server):
    async def callee(call):
        await call.wait_for_bot_to_speak()
        await call.say(speech("yes_this_is_ada"))
        await asyncio.sleep(1.2)  # the bot has started its answer…
        await call.hang_up()  # …and the callee is gone

    def long_reply(request):
        return [{"text": "Thank you. I am calling about your appointment next week, and I have a few details "
                         "to go through with you, starting with the time and the place of the visit."}]

    vendors.twilio.callee = callee
    vendors.gemini.respond = long_reply
    vendors.deepgram.transcripts = ["yes this is ada"]
    response = await server.dialout({"to_number": CALLEE_NUMBER})
    call = vendors.twilio.calls[response.json()["call_sid"]]
    await call.settled()

    record = await server.record(response.json()["call_id"], until=lambda r: r["summary"])
    assert (record["status"], record["end_reason"]) == ("completed", "callee-hung-up")
    assert ("callee", "yes this is ada") in [(t["speaker"], t["text"]) for t in record["transcript"]]
    # No outcome was recorded during the call, so the post-call request supplied one.
    assert record["outcome"] == "other"
    assert "outcome" in vendors.gemini.summary_requests[0]["generationConfig"]["responseJsonSchema"]["required"]
    # Twilio had already ended the call: the bot did not try to hang it up again.
    assert {"Status": "completed"} not in call.updates


@pytest.mark.parametrize("behaviour", ["busy", "no-answer", "failed"])
async def test_unanswered_calls_end_from_twilios_callbacks_alone(vendors, server, behaviour):
    vendors.twilio.answer_as[CALLEE_NUMBER] = behaviour
    vendors.twilio.duplicate_callbacks = True
    vendors.twilio.callback_delays = {"initiated": 0.9, "ringing": 0.7}  # arrive after the final one
    response = await server.dialout({"to_number": CALLEE_NUMBER})
    call = vendors.twilio.calls[response.json()["call_sid"]]
    await call.settled()

    assert call.stream_url is None  # nobody answered, so no stream ever opened
    assert call.callback_statuses()[:2] == [behaviour, behaviour]  # final first, and twice
    record = await server.record(response.json()["call_id"])
    assert (record["status"], record["end_reason"], record["talk_secs"]) == (behaviour, behaviour, None)
    assert [c["status"] for c in record["timeline"]][-1] == behaviour
    assert "in-progress" not in [c["status"] for c in record["timeline"]]


async def test_a_dial_twilio_refuses_is_recorded_as_failed(vendors, server):
    response = await server.dialout({"to_number": CALLEE_NUMBER, "from_number": "+14155550199"})
    assert response.status_code == 400 and response.json()["twilio_code"] == 21210
    listed = (await server.get("/calls", status="failed")).json()["calls"]
    assert len(listed) == 1 and listed[0]["end_reason"] == "error"
    record = await server.record(listed[0]["id"])
    assert "21210" in record["error"] and record["call_sid"] is None
