"""What the call benchmarks stand on: the vendor fakes in a process of their own, a bot server
(outcall's `server.py` or the plain Pipecat baseline) in another, the Twilio emulator placing
calls in this one, and the measurements taken from what crossed the emulated phone line.

Three processes, as in production, so the CPU and memory read from `/proc` are the server's
alone. The fakes answer at once: every millisecond measured is the server's own.
"""

import asyncio
import itertools
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from outcall.prompts import DEFAULT_GREETING  # noqa: E402
from tests.fakes.twilio import VOICED_RMS, EmulatedCall, TwilioEmulator, Utterance  # noqa: E402

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "bench-twilio-auth-token"
API_KEY = "bench-dialout-key"
OUR_NUMBER = "+14155550100"
CALLEE_BASE = 14155560000
TICKS_PER_SEC = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
REPLY_SECS_PER_CHAR = 0.012  # the fake TTS's speaking rate (tests/fakes/cartesia.py)


# --- the vendor fakes, in their own process ---------------------------------------------------


def bench_reply(chars: int):
    """The fake LLM's answer: a reply of `chars` characters, whatever the callee said."""
    sentence = "Thanks, that is helpful to know. "
    text = (sentence * (chars // len(sentence) + 1))[:chars].strip()
    return lambda request: [{"text": text}]


@dataclass
class VendorDelays:
    """How long the fakes take where real vendors take time (0: at once, the benchmark's default)."""

    finalize: float = 0.0  # Deepgram's final transcript after `Finalize`
    first_token: float = 0.0  # Gemini's first streamed token


def _serve_vendor_fakes(reply_chars: int, delays: VendorDelays, pipe) -> None:
    from tests.fakes.cartesia import FakeCartesia
    from tests.fakes.deepgram import FakeDeepgram
    from tests.fakes.gemini import FakeGemini

    async def serve():
        deepgram = await FakeDeepgram("dg-key").start()
        gemini = await FakeGemini("google-key", bench_reply(reply_chars)).start()
        cartesia = await FakeCartesia("cartesia-key").start()
        deepgram.finalize_delay, gemini.first_token_delay = delays.finalize, delays.first_token
        pipe.send({"deepgram": deepgram.base_url, "gemini": gemini.base_url, "cartesia": cartesia.url,
                   "cartesia_api": cartesia.api_url})
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, pipe.recv) == "stats":  # replies only, not greetings
            pipe.send({"tts_chars": sum(len(t) for t in cartesia.transcripts if t != DEFAULT_GREETING)})

    asyncio.run(serve())


class VendorFakes:
    """Deepgram, Gemini and Cartesia fakes running in a child process."""

    def __init__(self, reply_chars: int, delays: VendorDelays | None = None):
        self._pipe, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve_vendor_fakes, args=(reply_chars, delays or VendorDelays(), child), daemon=True
        )
        self._process.start()
        self.urls: dict[str, str] = self._pipe.recv()

    def synthesised_secs(self) -> float:
        """Seconds of reply speech (greetings aside) the fake TTS has produced so far."""
        self._pipe.send("stats")
        return self._pipe.recv()["tts_chars"] * REPLY_SECS_PER_CHAR

    def stop(self) -> None:
        self._pipe.send("stop")
        self._process.join(5)


# --- the bot servers -------------------------------------------------------------------------


@dataclass
class BotServer:
    """One bot server process: outcall's `server.py`, or the baseline."""

    kind: str  # "outcall" or "baseline"
    process: subprocess.Popen
    url: str
    log: Path

    def cpu_seconds(self, stat: str = "stat") -> float:
        fields = Path(f"/proc/{self.process.pid}/{stat}").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS_PER_SEC  # utime + stime

    def loop_cpu_seconds(self) -> float:
        """The main thread's: the event loop every in-process call shares, which bounds capacity."""
        return self.cpu_seconds(f"task/{self.process.pid}/stat")

    def rss_bytes(self) -> int:
        return int(Path(f"/proc/{self.process.pid}/statm").read_text().split()[1]) * PAGE_BYTES

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def turn_stop() -> str:
    """How the benchmarked servers end turns: call_bench.py --turn-stop sets BENCH_TURN_STOP."""
    return os.environ.get("BENCH_TURN_STOP", "smart_turn")


def server_environment(kind: str, port: int, twilio: TwilioEmulator, fakes: VendorFakes, speech_timeout: float) -> dict:
    env = {
        **os.environ,
        "PORT": str(port),
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": twilio.base_url,
        "DEEPGRAM_API_KEY": "dg-key",
        "DEEPGRAM_BASE_URL": fakes.urls["deepgram"],
        "GOOGLE_API_KEY": "google-key",
        "GOOGLE_API_BASE_URL": fakes.urls["gemini"],
        "CARTESIA_API_KEY": "cartesia-key",
        "CARTESIA_URL": fakes.urls["cartesia"],
        "CARTESIA_API_URL": fakes.urls["cartesia_api"],
        "USER_SPEECH_TIMEOUT_SECS": str(speech_timeout),
        "TURN_STOP": turn_stop(),  # both servers end turns the same way
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
    }
    if kind == "outcall":
        env.update(
            SERVER_URL=f"http://127.0.0.1:{port}",
            DIALOUT_API_KEY=API_KEY,
            STREAM_SECRET="bench-stream-secret",
            TWILIO_PHONE_NUMBER=OUR_NUMBER,
            DATABASE_URL=os.environ.get("BENCH_DATABASE_URL")
            or f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='outcall-bench-')}/outcall.db",
            WORKERS=os.environ.get("BENCH_WORKERS", "1"),
            IDLE_TIMEOUT_SECS="30",
        )
    return env


async def start_server(kind: str, twilio: TwilioEmulator, fakes: VendorFakes, speech_timeout: float) -> BotServer:
    port = free_port()
    script = ROOT / ("server.py" if kind == "outcall" else "bench/baseline_bot.py")
    log = Path(tempfile.mkstemp(prefix=f"{kind}-", suffix=".log")[1])
    process = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=server_environment(kind, port, twilio, fakes, speech_timeout),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            if process.poll() is not None:
                raise RuntimeError(f"{kind} server exited: {log.read_text()[-2000:]}")
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    return BotServer(kind, process, url, log)
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{kind} server did not start: {log.read_text()[-2000:]}")


async def place_call(server: BotServer, twilio: TwilioEmulator, http: httpx.AsyncClient, index: int) -> str:
    """Dial one emulated callee the way each server is meant to be used; returns the Twilio call SID."""
    to_number = f"+{CALLEE_BASE + index}"
    if server.kind == "outcall":
        response = await http.post(
            f"{server.url}/dialout",
            json={"to_number": to_number, "variables": {"first_name": "Ada"}},
            headers={"X-API-Key": API_KEY},
        )
        response.raise_for_status()
        return response.json()["call_sid"]
    response = await http.post(
        f"{twilio.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
        data={"To": to_number, "From": OUR_NUMBER, "Url": f"{server.url}/twiml"},
        auth=(ACCOUNT_SID, AUTH_TOKEN),
    )
    response.raise_for_status()
    return response.json()["sid"]


async def recorded_latencies_ms(server: BotServer, calls: list[EmulatedCall]) -> list[int]:
    """Each reply's latency as outcall's own call records have it (`latencies_ms`): from when the
    VAD heard the callee stop to the bot's first audio leaving the server."""
    latencies = []
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": API_KEY}) as http:
        for call in calls:
            for _ in range(50):  # the bot's final report lands just after the call ends
                record = (await http.get(f"/calls/{call.custom_parameters['call_id']}")).json()
                if record.get("end_reason") and record.get("latencies_ms") is not None:
                    break
                await asyncio.sleep(0.1)
            latencies += record.get("latencies_ms") or []
    return latencies


# --- what the callee hears -------------------------------------------------------------------


@dataclass
class CalleeLog:
    """What one scripted callee said, and when."""

    utterances: list[Utterance] = field(default_factory=list)


def vad_verdict_delay(ulaw: bytes, stop_secs: float = 0.2) -> float:
    """How long after the callee's last voiced frame ends Pipecat's Silero VAD declares the
    speech over, beyond the `stop_secs` it is configured to wait: the model's own hangover on
    this recording, the same in both bots (median over frame alignments)."""
    import numpy as np
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADParams

    from tests.fakes.audio import frames, rms, ulaw_to_pcm

    pcm = ulaw_to_pcm(ulaw)
    last_voiced_end = max(i for i, f in enumerate(frames(ulaw)) if rms(ulaw_to_pcm(f)) > VOICED_RMS) * 160 + 160
    delays = []
    for offset in range(0, 256, 32):
        audio = np.concatenate([np.zeros(offset, "<i2"), pcm, np.zeros(8000, "<i2")]).tobytes()
        vad = SileroVADAnalyzer(sample_rate=8000, params=VADParams(stop_secs=stop_secs))
        vad.set_sample_rate(8000)
        spoke = False
        for i in range(0, len(audio), 320):
            state = vad._run_analyzer(audio[i : i + 320]).name
            spoke = spoke or state == "SPEAKING"
            if spoke and state == "QUIET" and i // 2 + 160 > offset + last_voiced_end:
                delays.append((i // 2 + 160 - offset - last_voiced_end) / 8000 - stop_secs)
                break
    return statistics.median(delays)


def frame_lateness(call: EmulatedCall, log: CalleeLog, since: float, until: float) -> list[float]:
    """How late each bot audio frame in [since, until) arrived for seamless playout.

    Twilio plays what it has buffered; a frame arriving after the audio before it has finished
    playing leaves a gap the callee hears. Each reply to the callee starts a new stretch of
    playout (the pause before it is response time, measured elsewhere): a reply is what follows
    the end of the callee's speech, when that came after the bot's last voiced frame. So the
    previous reply's silent tail, still arriving as the callee starts, does not make the pause
    before the next reply a late frame; nor does a stall the callee took for the end of a reply
    and spoke into: that stall is the late frame, not the next reply.
    """
    speech_ends = [u.last_voiced_at for u in log.utterances if u.last_voiced_at]
    lateness: list[float] = []
    played_until = None
    voiced_at = -1.0  # the bot's latest voiced frame
    for frame in call.bot_audio:
        new_reply = played_until is None or any(voiced_at < end <= frame.at for end in speech_ends)
        if new_reply:
            played_until = frame.at
        if since <= frame.at < until:
            lateness.append(max(0.0, frame.at - played_until))
        played_until = max(played_until, frame.at) + frame.seconds
        if frame.rms > VOICED_RMS:
            voiced_at = frame.at
    return lateness


def percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else max(values)


class LoopLag:
    """How late this process's event loop wakes up: if the load generator itself falls behind,
    its timestamps are no longer the server's doing."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.lags: list[float] = []
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            self.lags.append(time.monotonic() - before - self.interval)

    def stop(self) -> list[float]:
        self._task.cancel()
        return self.lags


FIXTURES = ROOT / "tests" / "fixtures"


def callee_line(name: str = "natural_tuesday") -> bytes:
    """A recorded callee line from the test fixtures, 8 kHz μ-law."""
    return (FIXTURES / f"{name}.ulaw").read_bytes()


def callee_lines() -> list[bytes]:
    """The benchmark callee's lines: natural speech (piper's en_US-joe-medium voice), 1.8–2.4 s
    each, every one a finished sentence smart-turn judges so (tests/fixtures/make_speech.sh)."""
    return [path.read_bytes() for path in sorted(FIXTURES.glob("natural_*.ulaw"))]


def callee_turns() -> Iterator[bytes]:
    """One callee's lines, turn after turn, starting at a random one (callees out of step)."""
    lines = callee_lines()
    start = random.randrange(len(lines))
    return itertools.cycle(lines[start:] + lines[:start])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
