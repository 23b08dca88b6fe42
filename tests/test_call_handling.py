"""Answering machines, transfers, keypad tones, recording and hang-up through the API."""

import asyncio

import pytest

from outcall import prompts
from tests.conftest import CALLEE_NUMBER, OUR_NUMBER, conversation, speech
from tests.fakes.gemini import last_user_text

HUMAN_DESK = "+14155552672"


def said_nothing_useful(request: dict) -> list[dict]:
    return [{"text": "Sorry, could you repeat that?"}]


@pytest.mark.parametrize("action", ["leave_message", "hangup"])
async def test_an_answering_machine_gets_the_message_after_the_beep_or_a_hang_up(vendors, server, action):
    async def answering_machine(call):
        await call.say(speech("long_story"))  # "you've reached…", then the beep

    vendors.twilio.callee = answering_machine
    vendors.twilio.answer_as[CALLEE_NUMBER] = "machine_end_beep"
    vendors.gemini.respond = said_nothing_useful
    response = await server.dialout({
        "to_number": CALLEE_NUMBER,
        "variables": {"name": "Ada"},
        "voicemail": action,
        "voicemail_message": "Hi {name}, this is Acme Clinic. Please call us back.",
    })
    assert response.status_code == 200, response.text
    call = vendors.twilio.calls[response.json()["call_sid"]]
    await call.settled()

    record = await server.record(response.json()["call_id"], until=lambda r: r["end_reason"] and r["transcript"] is not None)
    assert record["answered_by"] == "machine_end_beep"
    assert record["outcome"] == "voicemail"
    if action == "leave_message":
        assert call.said == ["Hi Ada, this is Acme Clinic. Please call us back."]
        assert record["end_reason"] == "voicemail-left"
        assert "Polly" in call.updates[0]["Twiml"]
    else:
        assert call.said == []
        assert record["end_reason"] == "voicemail-skipped"
        assert call.updates[0] == {"Status": "completed"}
    # The bot, whose stream Twilio stopped, did not hang up over the message.
    assert len(call.updates) == 1
    assert call.callbacks[-1].params.get("AnsweredBy") == "machine_end_beep"


async def test_a_person_detected_by_amd_carries_on_talking(vendors, server):
    async def person(call):
        await call.wait_for_bot_to_speak()
        await asyncio.sleep(0.5)
        await call.hang_up()

    vendors.twilio.callee = person
    response = await server.dialout({"to_number": CALLEE_NUMBER, "voicemail": "hangup"})
    call = vendors.twilio.calls[response.json()["call_sid"]]
    await call.settled()
    record = await server.record(response.json()["call_id"])
    assert (record["answered_by"], record["end_reason"]) == ("human", "callee-hung-up")
    assert call.updates == [] and call.voiced_seconds() > 0  # the greeting played; nobody hung up


async def test_transfer_hands_the_call_to_a_person_after_the_handoff_line(vendors, server):
    async def callee(call):
        await call.wait_for_bot_to_speak()
        await call.say(speech("yes_this_is_ada"))

    def wants_a_person(request):
        if "yes" in last_user_text(request).lower():
            return [{"functionCall": {"name": "transfer_call", "args": {}}}]
        return said_nothing_useful(request)

    vendors.twilio.callee = callee
    vendors.gemini.respond = wants_a_person
    vendors.deepgram.transcripts = ["yes this is ada can I talk to a person"]
    response = await server.dialout({"to_number": CALLEE_NUMBER, "transfer_number": HUMAN_DESK})
    call = vendors.twilio.calls[response.json()["call_sid"]]
    await call.settled()

    assert call.dialed == [{"number": HUMAN_DESK, "callerId": OUR_NUMBER, "whispered": [], "bridged": True}]
    assert "<Dial" in call.updates[0]["Twiml"] and len(call.updates) == 1  # no REST hang-up after it
    assert vendors.cartesia.spoken_text().endswith(prompts.TRANSFER_LINE)
    assert call.hangup_requested_at is None
    record = await server.record(response.json()["call_id"], until=lambda r: r["end_reason"] and r["summary"])
    assert (record["end_reason"], record["transfer_number"], record["transfer_status"]) == ("transferred", HUMAN_DESK, "dialed")
    tools = [f["name"] for t in vendors.gemini.requests[0]["tools"] for f in t["functionDeclarations"]]
    assert "transfer_call" in tools


async def test_a_transfer_twilio_refuses_ends_the_call_with_an_apology(vendors, server):
    async def callee(call):
        await call.wait_for_bot_to_speak()
        await call.say(speech("yes_this_is_ada"))

    vendors.twilio.callee = callee
    vendors.twilio.redirect_errors = [(503, 20503, "Service Unavailable")]
    vendors.gemini.respond = lambda request: [{"functionCall": {"name": "transfer_call", "args": {}}}]
    vendors.deepgram.transcripts = ["can I talk to a person"]
    response = await server.dialout({"to_number": CALLEE_NUMBER, "transfer_number": HUMAN_DESK})
    call = vendors.twilio.calls[response.json()["call_sid"]]
    await call.settled()

    assert call.dialed == [] and vendors.cartesia.spoken_text().endswith(prompts.TRANSFER_FAILED)
    # The refused redirect, then the bot's own REST hang-up once the apology has played.
    assert "<Dial" in call.updates[0]["Twiml"] and call.updates[1:] == [{"Status": "completed"}]
    record = await server.record(response.json()["call_id"], until=lambda r: r["end_reason"] and r["summary"])
    assert record["end_reason"] == "error"


async def test_without_a_transfer_number_the_llm_is_not_offered_a_transfer(vendors, server):
    vendors.twilio.callee = conversation("yes_this_is_ada", hang_up=True)
    vendors.deepgram.transcripts = ["yes this is ada"]
    response = await server.dialout({"to_number": CALLEE_NUMBER})
    await vendors.twilio.calls[response.json()["call_sid"]].settled()
    tools = [f["name"] for t in vendors.gemini.requests[0]["tools"] for f in t["functionDeclarations"]]
    assert "transfer_call" not in tools and {"end_call", "record_outcome", "press_keys"} <= set(tools)


async def test_keys_pressed_reach_the_llm_and_the_llm_can_press_keys(vendors, server):
    async def phone_menu(call):
        await call.wait_for_bot_to_speak()
        await call.press("12#")
        await call.wait_for_bot_to_speak(timeout=10)
        await call.hang_up()

    def navigate(request):
        if "DTMF: 12#" in last_user_text(request):
            return [{"functionCall": {"name": "press_keys", "args": {"keys": "3"}}}]
        return said_nothing_useful(request)

    vendors.twilio.callee = phone_menu
    vendors.gemini.respond = navigate
    response = await server.dialout({"to_number": CALLEE_NUMBER})
    call = vendors.twilio.calls[response.json()["call_sid"]]
    await call.settled()
    assert call.callee_error is None, repr(call.callee_error)
    assert any("DTMF: 12#" in last_user_text(r) for r in vendors.gemini.requests)
    record = await server.record(response.json()["call_id"])
    assert ("bot", "[pressed 3]") in [(t["speaker"], t["text"]) for t in record["transcript"]]


async def test_a_recorded_call_keeps_its_recording(vendors, server):
    async def callee(call):
        await call.wait_for_bot_to_speak()
        await asyncio.sleep(1.1)
        await call.hang_up()

    vendors.twilio.callee = callee
    response = await server.dialout({"to_number": CALLEE_NUMBER, "record": True})
    call = vendors.twilio.calls[response.json()["call_sid"]]
    await call.settled()
    assert call.record
    record = await server.record(response.json()["call_id"], until=lambda r: r["recording_url"])
    assert record["recording_sid"].startswith("RE") and record["recording_duration_secs"] >= 1


async def test_the_api_cancels_a_ringing_call_and_hangs_up_an_answered_one(vendors, server):
    vendors.twilio.ring_secs = 30
    ringing = (await server.dialout({"to_number": CALLEE_NUMBER})).json()
    call = vendors.twilio.calls[ringing["call_sid"]]
    await server.record(ringing["call_id"], until=lambda r: r["status"] == "ringing")
    hung_up = await server.client.post(f"/calls/{ringing['call_id']}/hangup", headers={"X-API-Key": "test-dialout-key"})
    assert hung_up.json()["status"] == "canceling"
    await call.settled()
    assert (await server.record(ringing["call_id"]))["end_reason"] == "canceled"
    again = await server.client.post(f"/calls/{ringing['call_id']}/hangup", headers={"X-API-Key": "test-dialout-key"})
    assert again.status_code == 409 and "already ended" in again.json()["detail"]

    vendors.twilio.ring_secs = 0.05
    answered = (await server.dialout({"to_number": CALLEE_NUMBER})).json()
    call = vendors.twilio.calls[answered["call_sid"]]
    await call.wait_for_bot_to_speak()
    response = await server.client.post(f"/calls/{answered['call_id']}/hangup", headers={"X-API-Key": "test-dialout-key"})
    assert response.json()["status"] == "hanging_up"
    await call.settled()
    assert (await server.record(answered["call_id"]))["end_reason"] == "api-hangup"
