"""Test phone benchmark: how fast the bot answers in the browser, beside the same server answering
a phone call through the Twilio emulator, in one run. Not a test: it prints Markdown for the README.

    uv run python bench/browser_call_bench.py [--turns 8] [--readme]

One outcall `server.py` in its default configuration (smart-turn on), the vendor fakes answering
at once (bench/call_harness.py), then:
1. Phone: one call through the emulator, a warm-up call first. First words = the stream's
   `start` → the first voiced bot frame on the line; response = the callee's last voiced frame
   → the reply's first voiced frame.
2. Browser: the console's Test call page in headless Chromium, its microphone Chromium's fake
   device playing the same recorded line once per turn. First words = the socket opening → the
   first voiced frame the page's player played; response = the last voiced frame the page sent
   → the reply's first voiced frame played. So the browser's figures include its jitter buffer
   (40 ms, more after underruns) and its audio worklets; the sound card's output latency (reported) comes on top.
Voiced means the same on both lines: a 20 ms frame with RMS above 200 (16-bit).
"""

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from call_bench import REPLY_CHARS, LatencyResult, conversation, hang_up_all, run_calls, write_readme  # noqa: E402
from machine import machine  # noqa: E402
from call_harness import (  # noqa: E402
    ACCOUNT_SID, API_KEY, AUTH_TOKEN, OUR_NUMBER, VendorFakes, callee_line, percentile, start_server,
)
from tests.fakes.audio import ulaw_to_pcm  # noqa: E402
from tests.fakes.twilio import TwilioEmulator  # noqa: E402

CHROMIUM = os.environ.get("OUTCALL_CHROMIUM", "/usr/bin/chromium")
MIC_RATE = 48_000
TURN_GAP_SECS = 5.0  # after each line: the reply (≈ 2.7 s) and a pause, before the next turn


@dataclass
class BrowserResult:
    first_words_ms: list[float] = field(default_factory=list)
    response_ms: list[float] = field(default_factory=list)
    output_latency_ms: float | None = None
    underruns: int = 0


def microphone_wav(path: Path, turns: int) -> Path:
    """3 s of quiet (the greeting plays), then the recorded line once per turn."""
    line = ulaw_to_pcm(callee_line()).astype(np.float64)
    upsampled = np.interp(np.arange(len(line) * MIC_RATE // 8000) * 8000 / MIC_RATE, np.arange(len(line)), line)
    gap = np.zeros(int(TURN_GAP_SECS * MIC_RATE))
    audio = np.concatenate([np.zeros(3 * MIC_RATE), *([upsampled, gap] * turns)])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(MIC_RATE)
        out.writeframes(audio.astype("<i2").tobytes())
    return path


async def phone_latency(server, twilio: TwilioEmulator, turns: int) -> LatencyResult:
    result = LatencyResult()
    warm_up = await run_calls(server, twilio, 1, lambda call: call.wait_for_bot_to_speak())
    await asyncio.sleep(1)
    await hang_up_all(warm_up)
    done = asyncio.get_running_loop().create_future()

    async def callee(call):
        try:
            await conversation(call, turns, 0.0, result, barge_in=False)  # no wait subtracted: the raw response
        finally:
            done.set_result(None)

    calls = await run_calls(server, twilio, 1, callee)
    await done
    await hang_up_all(calls)
    return result


async def browser_latency(server, turns: int) -> BrowserResult:
    from playwright.async_api import async_playwright

    result = BrowserResult()
    wav = microphone_wav(Path(tempfile.mkdtemp(prefix="outcall-bench-")) / "mic.wav", turns)
    flags = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream",
             "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}%noloop",
             "--autoplay-policy=no-user-gesture-required"]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=flags, timeout=30_000)
        try:
            context = await browser.new_context(base_url=server.url, permissions=["microphone"])
            tab = await context.new_page()
            await tab.goto("/console/sign-in")
            await tab.get_by_label("Key or password").fill(API_KEY)
            await tab.get_by_role("button", name="Sign in").click()
            await tab.wait_for_url("**/console")
            await tab.goto("/console/test-call")
            await tab.get_by_role("button", name="Call").click()
            await tab.wait_for_function(
                "turns => window.testPhone.counters.responseMs.length >= turns", arg=turns,
                timeout=(3 + turns * (TURN_GAP_SECS + 3)) * 1000,
            )
            counters = await tab.evaluate("window.testPhone.counters")
            await tab.get_by_role("button", name="Hang up").click()
        finally:
            await browser.close()
    result.first_words_ms.append(counters["firstVoicePlayedMs"])
    result.response_ms = counters["responseMs"][:turns]
    result.output_latency_ms = counters["outputLatencyMs"]
    result.underruns = counters["underruns"]
    return result


def summarise(phone: LatencyResult, browser: BrowserResult) -> str:
    def p(values: list[float], q: int) -> int:
        return round(percentile(values, q))

    phone_p50, browser_p50 = p(phone.overhead_ms, 50), p(browser.response_ms, 50)
    rows = [
        "| figure (ms) | phone (Twilio emulator) | browser (test phone) | browser − phone |",
        "|---|---|---|---|",
        f"| first words (stream opens → first voiced audio) | {round(phone.first_words_ms[0])} | "
        f"{round(browser.first_words_ms[0])} | {round(browser.first_words_ms[0] - phone.first_words_ms[0])} |",
        f"| response p50 (callee's last voiced frame → first voiced reply) | {phone_p50} | {browser_p50} | "
        f"{browser_p50 - phone_p50} |",
        f"| response p95 | {p(phone.overhead_ms, 95)} | {p(browser.response_ms, 95)} | "
        f"{p(browser.response_ms, 95) - p(phone.overhead_ms, 95)} |",
    ]
    return (
        f"Machine: {machine()}; default configuration (smart-turn v3), vendor fakes answering at once, "
        f"{len(browser.response_ms)} turns each. The browser's player adds the sound card's output latency on top "
        f"({browser.output_latency_ms} ms reported by Chromium's AudioContext here); {browser.underruns} underruns.\n\n"
        + "\n".join(rows)
    )


async def main(args) -> tuple[LatencyResult, BrowserResult]:
    if not shutil.which(CHROMIUM):
        raise SystemExit(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    fakes = VendorFakes(REPLY_CHARS)
    twilio = await TwilioEmulator(ACCOUNT_SID, AUTH_TOKEN, {OUR_NUMBER}).start()
    server = await start_server("outcall", twilio, fakes, speech_timeout=0.3)
    try:
        phone = await phone_latency(server, twilio, args.turns)
        browser = await browser_latency(server, args.turns)
    finally:
        server.stop()
        await twilio.stop()
        fakes.stop()
    return phone, browser


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=8, help="turns measured on each line")
    parser.add_argument("--readme", action="store_true", help="replace the results block in README.md")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    phone, browser = asyncio.run(main(args))
    if args.json:
        args.json.write_text(json.dumps({"phone": asdict(phone), "browser": asdict(browser)}, indent=2))
    print(f"phone: first words {phone.first_words_ms}, responses {phone.overhead_ms}", file=sys.stderr)
    print(f"browser: first words {browser.first_words_ms}, responses {browser.response_ms}", file=sys.stderr)
    text = summarise(phone, browser)
    print(text)
    if args.readme:
        write_readme(text, block="browser-bench")
