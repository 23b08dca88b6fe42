"""How the bot behaves on a live call: hang-ups, barge-in, silence, etiquette and time limits."""

import asyncio

import pytest

from tests.conftest import CALLEE_NUMBER, speech
from tests.fakes.gemini import system_text

LONG_GREETING = (
    "Hello Ada, this is Sam from Acme Clinic. I am calling about your appointment next week, "
    "and I would like to go over a few details with you before then, if you have a moment."
)


def bot_tasks() -> list[asyncio.Task]:
    """Live tasks started by the bot or by Pipecat for it."""

    def started_by_bot(task: asyncio.Task) -> bool:
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code else ""
        return "/pipecat/" in filename or filename.endswith("/bot.py")

    return [t for t in asyncio.all_tasks() if not t.done() and started_by_bot(t)]


async def no_bot_tasks_within(seconds: float) -> list[asyncio.Task]:
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := bot_tasks()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return left


async def place_call(server, vendors, **payload):
    response = await server.dialout({"to_number": CALLEE_NUMBER, **payload})
    assert response.status_code == 200, response.text
    return vendors.twilio.calls[response.json()["call_sid"]]


async def test_callee_hanging_up_mid_sentence_ends_the_pipeline_cleanly(vendors, server):
    async def callee(call):
        while not call.bot_audio:  # the bot has started its long greeting
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert bot_tasks(), "the check below would pass vacuously"
        await call.hang_up()

    vendors.twilio.callee = callee
    call = await place_call(server, vendors, greeting=LONG_GREETING)
    await asyncio.wait_for(call.ended.wait(), 10)
    assert call.callee_error is None, repr(call.callee_error)
    assert call.heard_seconds() < 1.5  # the greeting (about 2 s) was cut off
    assert await no_bot_tasks_within(5) == []


async def test_callee_speaking_over_the_bot_clears_twilios_audio(vendors, server):
    async def callee(call):
        while not call.bot_audio:
            await asyncio.sleep(0.01)
        await call.say(speech("yes_this_is_ada"))
        await call.wait_for_bot_to_speak()
        await call.hang_up()

    vendors.twilio.callee = callee
    vendors.deepgram.transcripts = ["sorry who is this"]
    call = await place_call(server, vendors, greeting=LONG_GREETING)
    await asyncio.wait_for(call.ended.wait(), 20)
    assert call.callee_error is None, repr(call.callee_error)
    assert call.clears, "the bot never told Twilio to drop its queued audio"
    # The reply to the interruption was spoken after the clear.
    assert "sorry who is this" in str(vendors.gemini.requests[-1]["contents"])


@pytest.mark.parametrize("server_overrides", [{"idle_timeout_secs": 0.6}])
async def test_silence_gets_one_check_in_then_a_polite_hang_up(vendors, server):
    call = await place_call(server, vendors)  # nobody scripted: the callee never speaks
    await asyncio.wait_for(call.ended.wait(), 20)
    spoken = vendors.cartesia.spoken_text()
    assert "Are you still there?" in spoken
    assert spoken.endswith("I'll let you go now. Goodbye!")
    assert spoken.count("Are you still there?") == 1
    assert {"Status": "completed"} in call.updates
    assert vendors.gemini.requests == []


async def test_waiting_for_the_callee_to_speak_first(vendors, server):
    async def callee(call):
        await asyncio.sleep(1.0)
        assert call.first_voiced_at() is None, "the bot spoke before the callee"
        await call.say(speech("yes_this_is_ada"))
        await call.wait_for_bot_to_speak()
        await call.hang_up()

    vendors.twilio.callee = callee
    call = await place_call(server, vendors, wait_for_callee=True, greeting="Hi {name}!", variables={"name": "Ada"})
    await asyncio.wait_for(call.ended.wait(), 20)
    assert call.callee_error is None, repr(call.callee_error)
    assert 'Answer them with this greeting: "Hi Ada!"' in system_text(vendors.gemini.requests[0])


@pytest.mark.parametrize("server_overrides", [{"max_call_duration_secs": 2}])
async def test_the_time_limit_ends_the_call_politely(vendors, server):
    call = await place_call(server, vendors)
    await asyncio.wait_for(call.ended.wait(), 20)
    assert call.time_limit == 32  # Twilio's own backstop, a little after the bot's
    assert vendors.cartesia.spoken_text().endswith("reached the time limit for this call. Goodbye!")
    assert {"Status": "completed"} in call.updates
