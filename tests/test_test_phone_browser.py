"""The test phone in a real headless Chromium: an operator talks with the bot from the console.

Chromium's fake microphone plays a WAV made here from the project's speech fixtures
(`--use-file-for-fake-audio-capture`, once); Playwright mutes what the page plays, so the tests
read the counters the page keeps (`window.testPhone.counters`). Everything else is real: the
page's worklets and μ-law codec, the server's `/ws`, the bot, and the vendor fakes.
"""

import contextlib
import wave
from pathlib import Path

import numpy as np

from tests.campaign_helpers import wait_for
from tests.conftest import speech
from tests.fakes.audio import pcm_to_ulaw, ulaw_to_pcm
from tests.fakes.gemini import last_user_text
from tests.test_console_browser import chromium, screenshot, signed_in_tab

MIC_RATE = 48_000
LONG_REPLY = "Of course. " + "We have a few openings next week, and I can book whichever suits you best. " * 4


def microphone_wav(path: Path, *parts: float | bytes) -> Path:
    """A 48 kHz WAV for Chromium's fake microphone: seconds of silence, or 8 kHz μ-law speech."""
    pieces = []
    for part in parts:
        if isinstance(part, bytes):
            line = ulaw_to_pcm(part).astype(np.float64)
            t = np.arange(len(line) * MIC_RATE // 8000) * 8000 / MIC_RATE
            pieces.append(np.interp(t, np.arange(len(line)), line))
        else:
            pieces.append(np.zeros(int(part * MIC_RATE)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(MIC_RATE)
        out.writeframes(np.concatenate(pieces).astype("<i2").tobytes())
    return path


@contextlib.asynccontextmanager
async def phone_tab(server, wav: Path):
    """A signed-in tab on the Test call page, with `wav` as its microphone."""
    flags = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             f"--use-file-for-fake-audio-capture={wav}%noloop", "--autoplay-policy=no-user-gesture-required")
    async with chromium(*flags) as browser:
        async with signed_in_tab(browser, server, permissions=["microphone"]) as tab:
            await tab.get_by_role("link", name="Test call").click()
            await tab.wait_for_url("**/console/test-call")
            yield tab


async def counters(tab) -> dict:
    return await tab.evaluate("window.testPhone.counters")


async def until_counters(tab, condition: str, timeout: float = 20) -> dict:
    """Wait until `condition`, a JavaScript expression over `c` (the counters), holds."""
    await tab.wait_for_function(f"() => {{ const c = window.testPhone.counters; return {condition}; }}", timeout=timeout * 1000)
    return await counters(tab)


def clinic_llm(request: dict) -> list[dict]:
    heard = last_user_text(request)
    if "DTMF" in heard:
        return [{"text": f"You pressed {heard.split('DTMF:')[-1].strip()}."}]
    if "wait" in heard:
        return [{"text": "Sure, take your time."}]
    return [{"text": LONG_REPLY}]


async def test_an_operator_talks_with_the_bot_from_the_browser(vendors, server, tmp_path):
    vendors.gemini.respond = clinic_llm
    vendors.deepgram.transcripts = ["yes this is ada", "wait a moment"]
    # Quiet while the greeting plays; a turn; then talking over the bot's long reply.
    wav = microphone_wav(tmp_path / "mic.wav", 3.0, speech("yes_this_is_ada"), 1.7, speech("yes_this_is_ada"), 30.0)
    async with phone_tab(server, wav) as tab:
        await tab.get_by_label("Greeting").fill("Hello {first_name}, this is Acme Clinic calling about your visit.")
        await tab.get_by_label("Variables (JSON)").fill('{"first_name": "Ada", "clinic": "Acme"}')
        await tab.get_by_label("Prompt").fill("You book visits for the {clinic} clinic. The patient is {first_name}.")
        await tab.get_by_role("button", name="Call").click()

        # The greeting is heard before the callee says a word.
        c = await until_counters(tab, "c.voicedFramesPlayed >= 20", timeout=10)
        assert c["state"] == "connected" and c["voicedFramesSent"] == 0 and c["firstVoicePlayedMs"] is not None
        call_id = (await tab.locator("[data-field=call-link]").get_attribute("href")).rsplit("/", 1)[1]

        # The callee's speech reaches the STT and the LLM with the personalised prompt; the reply is heard.
        c = await until_counters(tab, "c.responseMs.length >= 1")
        request = next(r for r in vendors.gemini.requests if "yes this is ada" in last_user_text(r))
        assert "The patient is Ada" in str(request["systemInstruction"])
        await tab.locator(".transcript .turn.callee").filter(has_text="yes this is ada").wait_for()

        # Talking over the long reply: the server sends `clear`, and the page drops the reply's
        # audio it had queued, unplayed (the clear at the callee's first words found nothing queued).
        await until_counters(tab, "c.droppedByClear > 0")
        await tab.locator(".transcript .turn.callee").filter(has_text="wait a moment").wait_for()
        await screenshot(tab, "test-call")

        # The keypad's digits reach the LLM as DTMF.
        await tab.get_by_role("group", name="Keypad").get_by_role("button", name="4", exact=True).click()
        await wait_for(lambda: any("DTMF: 4" in last_user_text(r) for r in vendors.gemini.requests), 10)

        # Hanging up from the page ends the record as the callee's hang-up.
        await tab.get_by_role("button", name="Hang up").click()
        c = await until_counters(tab, "c.state === 'ended'")
        assert c["framesSent"] > 300 and c["framesReceived"] > 0, c
    record = await server.record(call_id, until=lambda r: r["status"] == "completed" and r["ended_at"])
    assert (record["channel"], record["end_reason"]) == ("browser", "callee-hung-up")
    speakers = [turn["speaker"] for turn in record["transcript"]]
    assert "callee" in speakers and "bot" in speakers
    assert record["transcript"][0]["text"] == "Hello Ada, this is Acme Clinic calling about your visit."
    assert vendors.twilio.rest_requests == []


async def test_the_pages_codec_and_player_behave_as_twilio_and_closing_the_tab_hangs_up(vendors, server, tmp_path):
    async with phone_tab(server, microphone_wav(tmp_path / "mic.wav", 20.0)) as tab:
        # The page's μ-law agrees with the Python codec, both ways, on every value.
        samples = np.arange(-32768, 32768, 3, dtype=np.int32)
        encoded, decoded = await tab.evaluate("""async (samples) => {
            const g711 = await import("/console/static/g711.js");
            return [samples.map(g711.encodeSample), Array.from({length: 256}, (_, b) => g711.decodeSample(b))];
        }""", samples.tolist())
        assert bytes(encoded) == pcm_to_ulaw(samples)
        assert decoded == ulaw_to_pcm(bytes(range(256))).tolist()

        # The player echoes a mark once the audio before it has played, and a clear returns the
        # pending marks at once, as Twilio does.
        played = await tab.evaluate("""async () => {
            const context = new AudioContext();
            await context.audioWorklet.addModule("/console/static/phone_worklets.js");
            const player = new AudioWorkletNode(context, "phone-playback", { outputChannelCount: [1] });
            player.connect(context.destination);
            await context.resume();
            const events = [];
            const begun = performance.now();
            player.port.onmessage = ({ data }) => {
                if (data.type !== "played") events.push({ ...data, at: Math.round(performance.now() - begun) });
            };
            const tone = new Float32Array(4000).map((_, i) => 0.3 * Math.sin(i / 3));  // 0.5 s at 8 kHz
            player.port.postMessage({ type: "audio", samples: tone });
            player.port.postMessage({ type: "mark", name: "after-half-a-second" });
            await new Promise((done) => setTimeout(done, 800));
            player.port.postMessage({ type: "audio", samples: tone.slice() });
            player.port.postMessage({ type: "mark", name: "never-played" });
            player.port.postMessage({ type: "clear" });
            await new Promise((done) => setTimeout(done, 100));
            await context.close();
            return events;
        }""")
        mark, cleared = (next(e for e in played if e["type"] == kind) for kind in ("mark", "cleared"))
        assert mark["name"] == "after-half-a-second" and 450 <= mark["at"] <= 800, played
        assert cleared["marks"] == ["never-played"] and cleared["dropped"] > 3000, played

        await tab.get_by_role("button", name="Call").click()
        await until_counters(tab, "c.voicedFramesPlayed >= 10", timeout=10)
        call_id = (await tab.locator("[data-field=call-link]").get_attribute("href")).rsplit("/", 1)[1]
        await tab.close()
        tab.errors = []
    record = await server.record(call_id, until=lambda r: r["status"] == "completed" and r["ended_at"])
    assert (record["channel"], record["end_reason"]) == ("browser", "callee-hung-up")
