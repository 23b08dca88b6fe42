"""Speculative replies (pipelines/speculative_turn.py) end to end, in the default configuration
and with TURN_STOP=speech_timeout: the LLM is asked at VAD stop on the transcript in hand while
smart-turn judges or the timeout runs, and only a reply to the finished turn's final transcript
reaches the callee, once."""

import asyncio
import time

import pytest

from tests.conftest import CALLEE_NUMBER, conversation, speech
from tests.fakes.gemini import last_user_text

SMART_TURN = {"turn_stop": "smart_turn"}
EITHER_TURN_STOP = pytest.mark.parametrize(
    "server_overrides", [SMART_TURN, {"turn_stop": "speech_timeout"}], ids=["smart_turn", "speech_timeout"]
)

RATE = 8000


def echo(request: dict) -> list[dict]:
    """The LLM says back what it was asked about, so the callee's ears tell which answer was spoken."""
    return [{"text": f"You said: {last_user_text(request)}."}]


async def call_with(vendors, server, callee) -> dict:
    vendors.twilio.callee = callee
    body = (await server.dialout({"to_number": CALLEE_NUMBER})).json()
    await asyncio.wait_for(vendors.twilio.calls[body["call_sid"]].ended.wait(), 30)
    return await server.record(body["call_id"], until=lambda r: r["end_reason"] and r["transcript"])


def callee_turns(record: dict) -> list[str]:
    return [t["text"] for t in record["transcript"] if t["speaker"] == "callee"]


@EITHER_TURN_STOP
async def test_the_llm_is_asked_before_the_final_transcript_and_once_a_turn(vendors, server):
    vendors.deepgram.finalize_delay = 0.4  # a final transcript well after smart-turn's verdict
    vendors.deepgram.transcripts = [("tuesday afternoon works best for me", "Tuesday afternoon works best for me.")]
    asked_at: list[float] = []

    def respond(request):
        asked_at.append(time.monotonic())
        return echo(request)

    vendors.gemini.respond = respond

    record = await call_with(vendors, server, conversation("natural_tuesday", hang_up=True))
    # Asked on the interim, before the final transcript arrived; the final (punctuated) confirmed it.
    assert [last_user_text(r) for r in vendors.gemini.requests] == ["tuesday afternoon works best for me"]
    [(final_at, _)] = vendors.deepgram.finals
    assert asked_at[0] < final_at
    assert callee_turns(record) == ["Tuesday afternoon works best for me."]
    assert vendors.cartesia.spoken_text().count("You said: tuesday afternoon works best for me.") == 1


@EITHER_TURN_STOP
@pytest.mark.parametrize("finalize_delay", [0.0, 0.4], ids=["final-while-deciding", "final-after-decision"])
async def test_a_revised_transcript_is_answered_instead_of_the_interim(vendors, server, finalize_delay):
    vendors.deepgram.finalize_delay = finalize_delay
    vendors.deepgram.transcripts = [("can you call me back", "Can you call me back tomorrow morning?")]
    vendors.gemini.respond = echo

    record = await call_with(vendors, server, conversation("natural_call_back", hang_up=True))
    asked = [last_user_text(r) for r in vendors.gemini.requests]
    if finalize_delay:
        assert asked == ["can you call me back", "Can you call me back tomorrow morning?"]
    else:  # a speculation withdrawn within milliseconds may never reach the LLM
        assert asked[-1] == "Can you call me back tomorrow morning?" and set(asked[:-1]) <= {"can you call me back"}
    assert callee_turns(record) == ["Can you call me back tomorrow morning?"]
    spoken = vendors.cartesia.spoken_text()
    assert "You said: Can you call me back tomorrow morning?" in spoken
    assert "You said: can you call me back." not in spoken  # the withdrawn reply was never heard


@pytest.mark.parametrize("server_overrides", [SMART_TURN])
async def test_an_unfinished_sentence_is_answered_only_once_finished(vendors, server):
    """Smart-turn judges the first half of a sentence unfinished (p ≈ 0.05 after the VAD's stop):
    the reply speculated on it is withdrawn unheard, and the whole sentence is answered once."""
    first, rest = "well let me tell you a long story about my day and then", "tuesday afternoon works best for me"
    vendors.deepgram.transcripts = [first, rest]
    vendors.gemini.respond = echo

    async def callee(call):
        await call.wait_for_bot_to_speak()
        await call.say(speech("long_story")[: int(4.8 * RATE)])  # cut mid-sentence
        await asyncio.sleep(0.8)  # a pause the VAD takes for a stop, too short for smart-turn's 3 s
        await call.say(speech("natural_tuesday"))
        await call.wait_for_bot_to_speak()
        await call.hang_up()

    record = await call_with(vendors, server, callee)
    assert [last_user_text(r) for r in vendors.gemini.requests] == [first, f"{first} {rest}"]
    assert callee_turns(record) == [f"{first} {rest}"]
    spoken = vendors.cartesia.spoken_text()
    assert spoken.count("You said:") == 1 and f"You said: {first} {rest}." in spoken
