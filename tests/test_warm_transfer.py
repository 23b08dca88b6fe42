"""Warm transfers (TRANSFER_MODE=warm, or a call's `transfer_mode`): the callee holds while the
person who answers hears why and a one-sentence summary (`<Dial><Number url>`), and presses 1
to take the call; unanswered or declined, the callee hears an apology and the record says so."""

import pytest

from outcall import prompts
from tests.conftest import CALLEE_NUMBER, OUR_NUMBER, speech
from tests.fakes.gemini import last_user_text

HUMAN_DESK = "+14155552672"


def wants_a_person(request: dict) -> list[dict]:
    if "person" in last_user_text(request).lower():
        return [{"functionCall": {"name": "transfer_call", "args": {
            "reason": "wants to reschedule", "summary": "Ada cannot come on Tuesday and asked for a person."}}}]
    return [{"text": "I'm calling to confirm your appointment."}]


async def transferred_call(vendors, server, person: str) -> tuple:
    async def callee(call):
        await call.wait_for_bot_to_speak()
        await call.say(speech("yes_this_is_ada"))

    vendors.twilio.callee = callee
    vendors.twilio.dialed_person[HUMAN_DESK] = person
    vendors.gemini.respond = wants_a_person
    vendors.deepgram.transcripts = ["yes this is ada can I talk to a person"]
    server.settings.transfer_fallback = "goodbye"
    response = await server.dialout({"to_number": CALLEE_NUMBER, "transfer_number": HUMAN_DESK, "transfer_mode": "warm"})
    assert response.status_code == 200, response.text
    call = vendors.twilio.calls[response.json()["call_sid"]]
    await call.settled()
    record = await server.record(response.json()["call_id"], until=lambda r: r["status"] == "completed" and r["summary"])
    return call, record


async def test_an_answered_warm_transfer_whispers_then_connects(vendors, server):
    call, record = await transferred_call(vendors, server, "accept")
    [dial] = call.dialed
    assert (dial["number"], dial["callerId"], dial["bridged"]) == (HUMAN_DESK, OUR_NUMBER, True)
    whisper = " ".join(dial["whispered"])
    assert "wants to reschedule" in whisper and "Ada cannot come on Tuesday" in whisper and "Press 1" in whisper
    assert call.said == [prompts.TRANSFER_HOLD]  # the callee held; nobody apologised
    assert (record["end_reason"], record["transfer_status"]) == ("transferred", "connected")
    assert record["transfer_note"] == "wants to reschedule\nAda cannot come on Tuesday and asked for a person."
    assert call.hangup_requested_at is None  # the bot left the call to Twilio


@pytest.mark.parametrize(("person", "status"), [("decline", "declined"), ("no-answer", "no-answer"), ("busy", "busy")])
async def test_with_transfer_fallback_goodbye_a_warm_transfer_nobody_takes_ends_with_an_apology(vendors, server, person, status):
    call, record = await transferred_call(vendors, server, person)
    [dial] = call.dialed
    assert dial["bridged"] is False and bool(dial["whispered"]) == (person == "decline")
    assert call.said == [prompts.TRANSFER_HOLD, prompts.TRANSFER_UNAVAILABLE]
    assert (record["end_reason"], record["transfer_status"]) == ("transfer-failed", status)
    assert record["summary"]  # the bot's final report still arrived


async def test_whisper_callbacks_are_signed_like_every_webhook(server):
    for path in ("/twilio/whisper", "/twilio/whisper-answer", "/twilio/transfer-result"):
        response = await server.client.post(f"{path}?call_id=x", data={"CallSid": "CA" + "1" * 32})
        assert response.status_code == 403, path


async def test_a_warm_transfer_nobody_takes_comes_back_to_the_bot(vendors, server):
    streams = []

    async def callee(call):  # runs again on the second stream
        streams.append(call.stream_sid)
        await call.wait_for_bot_to_speak()
        await call.say(speech("yes_this_is_ada" if len(streams) == 1 else "thanks_goodbye"))
        if len(streams) > 1:
            await call.wait_for_bot_to_speak()

    def llm(request: dict) -> list[dict]:
        heard = last_user_text(request).lower()
        if "transfer did not go through" in heard:
            return [{"text": "I'm sorry, nobody could take your call just now. Is there anything else?"}]
        if "goodbye" in heard:
            return [{"text": "Goodbye!"}, {"functionCall": {"name": "end_call", "args": {}}}]
        return wants_a_person(request)

    vendors.twilio.callee = callee
    vendors.twilio.dialed_person[HUMAN_DESK] = "no-answer"
    vendors.gemini.respond = llm
    vendors.deepgram.transcripts = ["yes this is ada can I talk to a person", "no thanks goodbye"]
    response = await server.dialout({"to_number": CALLEE_NUMBER, "transfer_number": HUMAN_DESK, "transfer_mode": "warm"})
    call = vendors.twilio.calls[response.json()["call_sid"]]
    await call.settled(timeout=40)
    # The first session's summary can land before Twilio's `completed`; the record is final with
    # the second session's end reason.
    record = await server.record(
        response.json()["call_id"], until=lambda r: r["status"] == "completed" and r["summary"] and r["end_reason"]
    )

    assert len(streams) == 2 and streams[0] != streams[1]  # Twilio opened a second stream, with a new token
    assert (record["end_reason"], record["transfer_status"]) == ("bot-ended", "no-answer")
    assert call.said == [prompts.TRANSFER_HOLD]  # no apology from Twilio: the bot said it
    texts = [t["text"] for t in record["transcript"]]
    assert texts[0].startswith("Hello!")  # the first session's turns are kept…
    assert "yes this is ada can I talk to a person" in texts and "no thanks goodbye" in texts  # …and the second's follow
    assert any("nobody could take your call" in t for t in texts)
    assert vendors.cartesia.spoken_text().count("automated assistant") == 1  # greeted once, not again
    second_session = [r for r in vendors.gemini.requests if "transfer did not go through" in str(r)]
    assert second_session and "can I talk to a person" in str(second_session[0]["contents"])  # it knew the conversation
