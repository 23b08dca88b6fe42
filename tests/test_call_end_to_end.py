"""A whole call, offline: /dialout → Twilio → /twiml → stream → greeting → conversation → hang-up."""

import asyncio

import pytest

from loguru import logger

from tests.conftest import CALLEE_NUMBER, speech
from tests.fakes.gemini import last_user_text, system_text


async def test_personalised_call_from_dialout_to_hangup(vendors, server):
    async def callee(call):
        await call.wait_for_bot_to_speak()  # the greeting
        await call.say(speech("yes_this_is_ada"))
        await call.wait_for_bot_to_speak()  # the LLM's reply
        await call.say(speech("thanks_goodbye"))

    vendors.twilio.callee = callee
    vendors.deepgram.transcripts = ["yes this is ada what is this about", "okay thank you goodbye"]

    response = await server.dialout(
        {
            "to_number": CALLEE_NUMBER,
            "variables": {"name": "Ada", "due_date": "March 3rd"},
            "metadata": {"crm_id": "42"},
            "greeting": "Hi {name}, this is Sam from Acme Clinic about your visit on {due_date}.",
        }
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "call_initiated"
    assert body["to_number"] == CALLEE_NUMBER
    call = vendors.twilio.calls[body["call_sid"]]

    await asyncio.wait_for(call.ended.wait(), 30)
    assert call.callee_error is None, repr(call.callee_error)

    # Twilio fetched signed TwiML that streams to our /ws with the call's id and token.
    assert call.stream_url == server.url.replace("http", "ws") + "/ws"
    assert call.custom_parameters["call_id"] == body["call_id"]
    assert call.custom_parameters["to_number"] == CALLEE_NUMBER
    assert call.custom_parameters["stream_token"].startswith("v1.")
    assert "Pause" not in call.twiml

    # The greeting was personalised and spoken first; the bot answered the callee.
    assert vendors.cartesia.transcripts[0].startswith("Hi Ada, this is Sam from Acme Clinic")
    assert "March 3rd" in vendors.cartesia.spoken_text()
    assert "confirm your appointment" in vendors.cartesia.spoken_text()
    assert call.voiced_seconds() > 1.0

    # The callee's words reached the LLM, under the personalised prompt.
    first = vendors.gemini.requests[0]
    assert "yes this is ada" in str(first["contents"])
    assert "- name: Ada" in system_text(first) and "- due_date: March 3rd" in system_text(first)
    assert any(t["functionDeclarations"][0]["name"] == "end_call" for t in first["tools"])

    # The LLM said goodbye, called end_call, and the bot hung up through the REST API.
    assert "Goodbye" in vendors.cartesia.spoken_text()
    assert {"Status": "completed"} in call.updates
    assert call.stream_closed.is_set()
    assert vendors.cartesia.spoken_text().endswith("Thank you for your time. Goodbye!")
    # ...and only once the goodbye had been heard in full.
    assert call.hangup_requested_at > call.last_voiced_at()



async def test_calls_that_end_as_intended_log_no_error(vendors, server):
    """The bot's REST hang-up makes Twilio close the stream while the bot closes it too: that race
    must not be logged as an error (it once was, by Pipecat's transport, now and then)."""
    errors: list[str] = []
    sink = logger.add(lambda message: errors.append(message), level="ERROR")

    async def callee(call):
        await call.wait_for_bot_to_speak()
        await call.say(speech("thanks_goodbye"))

    vendors.twilio.callee = callee
    vendors.deepgram.transcripts = ["okay thank you goodbye"] * 6
    try:
        placed = [(await server.dialout({"to_number": f"+1415555267{i}"})).json() for i in range(6)]
        for body in placed:
            await asyncio.wait_for(vendors.twilio.calls[body["call_sid"]].ended.wait(), 30)
            record = await server.record(body["call_id"], until=lambda r: r["summary"] or r["end_reason"] and r["transcript"])
            assert record["end_reason"] == "bot-ended"
        await asyncio.sleep(0.5)  # a close that fails is reported just after the call
    finally:
        logger.remove(sink)
    assert errors == []


@pytest.mark.parametrize("server_overrides", [{"turn_stop": "smart_turn"}])
async def test_the_default_smart_turn_ends_the_callees_turns(vendors, server):
    """The configuration users run: smart-turn v3 (one model shared by the process's calls)
    decides when the callee has finished, and the bot answers each turn."""
    async def callee(call):
        await call.wait_for_bot_to_speak()
        await call.say(speech("yes_this_is_ada"))
        await call.wait_for_bot_to_speak()
        await call.say(speech("thanks_goodbye"))

    vendors.twilio.callee = callee
    vendors.deepgram.transcripts = ["yes this is ada what is this about", "okay thank you goodbye"]
    body = (await server.dialout({"to_number": CALLEE_NUMBER})).json()
    await asyncio.wait_for(vendors.twilio.calls[body["call_sid"]].ended.wait(), 30)
    record = await server.record(body["call_id"], until=lambda r: r["end_reason"] and r["summary"])
    assert record["end_reason"] == "bot-ended"
    assert [t["speaker"] for t in record["transcript"]] == ["bot", "callee", "bot", "callee", "bot"]
    # The goodbye turn's reply, asked for at VAD stop, wanted a tool (end_call): Pipecat withdrew it
    # unheard, and the LLM was asked again once the turn had ended; the tool ran once.
    goodbyes = [r for r in vendors.gemini.requests if last_user_text(r) == "okay thank you goodbye"]
    assert len(goodbyes) == 2 and vendors.cartesia.spoken_text().count("Goodbye!") == 1
