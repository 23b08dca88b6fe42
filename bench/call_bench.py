"""Call benchmark: what outcall's bot adds to a call's latency and costs per call, side by side
with a plain Pipecat bot (bench/baseline_bot.py). Not a test: it prints Markdown for the README.

    uv run python bench/call_bench.py [--calls 1 10 20 40 60] [--turns 52] [--window 20] [--readme]

The callee speaks natural recorded lines (tests/fixtures/natural_*.ulaw), a different one each
turn. For each server (outcall's `server.py`, then the baseline), in a process of its own:
1. Latency: a few concurrent callees take turns. First words = the stream's `start` message →
   the first voiced bot frame. Response overhead = the callee's last voiced frame → the first
   voiced frame of the reply, minus the endpointing wait both bots are configured with (VAD
   stop 0.2 s + speech timeout). The last turn of each call talks over the reply: barge-in =
   the callee's first voiced frame → the `clear` message, minus VAD start (0.2 s). Before
   them, calls placed one at a time give the CPU a call costs outside its conversation: dial →
   first words, and hang-up → quiet.
2. Cost: N concurrent calls, started one a second (`--every`), the callee line sending 20 ms
   frames throughout (speech, then line silence while the bot answers, about half the time
   each). Over a steady window: the server process's CPU per call-second and peak resident
   memory per call (above the idle server after one warm-up call with one exchange), how late
   the bot's frames arrive for seamless playout, and the calls' first words. Capacity is the
   largest N with no frame more than 100 ms late.

The servers log at INFO into temporary files (their paths are in the error if one fails to
start); BENCH_LOG_LEVEL=DEBUG makes them log Pipecat's timings too.
"""

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine  # noqa: E402
from call_harness import (  # noqa: E402
    ACCOUNT_SID,
    API_KEY,
    AUTH_TOKEN,
    OUR_NUMBER,
    ROOT,
    BotServer,
    CalleeLog,
    LoopLag,
    VendorDelays,
    VendorFakes,
    callee_line,
    callee_lines,
    callee_turns,
    frame_lateness,
    percentile,
    place_call,
    recorded_latencies_ms,
    start_server,
    turn_stop,
    vad_verdict_delay,
)
from tests.fakes.twilio import VOICED_RMS, EmulatedCall, TwilioEmulator  # noqa: E402

VAD_START_SECS = 0.2
VAD_STOP_SECS = 0.2
LATE_SECS = 0.1
TEARDOWN_SECS = 2.0  # a hung-up call's summary request and final report are done within this
REPLY_CHARS = 225  # ≈ 2.7 s of fake speech: the bot talks about half of each exchange
KINDS = ("outcall", "baseline")


@dataclass
class LatencyResult:
    first_words_ms: list[float] = field(default_factory=list)
    overhead_ms: list[float] = field(default_factory=list)
    barge_in_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)  # outcall's records: turn end → first audio out
    setup_cpu_ms: list[float] = field(default_factory=list)  # per call: dial → first words
    teardown_cpu_ms: list[float] = field(default_factory=list)  # per call: hang-up → quiet again


@dataclass
class CostResult:
    calls: int
    window_secs: float
    cpu_ms_per_call_sec: float
    loop_cpu_ms_per_call_sec: float  # of it, the event loop's thread
    rss_mb_per_call: float
    idle_rss_mb: float
    late_frames: int
    frames: int
    max_late_ms: float
    p99_late_ms: float
    bot_talk_share: float
    overhead_p50_ms: float | None
    first_words_p95_ms: float | None  # of the N calls, started one every `--every` seconds
    audio_received_share: float
    load_generator_lag_p99_ms: float


def endpointing_secs(speech_timeout: float) -> float:
    """The wait both servers are configured to make after the callee's speech: VAD stop, where
    smart-turn decides, plus the speech timeout when turns end on that instead."""
    return VAD_STOP_SECS + (speech_timeout if turn_stop() == "speech_timeout" else 0.0)


async def conversation(call: EmulatedCall, turns: int, endpointing: float, result: LatencyResult, barge_in: bool):
    """The latency callee: hear the greeting, take `turns` turns, then talk over the bot."""
    await call.wait_for_bot_to_speak(quiet=0.2)
    result.first_words_ms.append((call.first_voiced_at(after=call.stream_started_at) - call.stream_started_at) * 1000)
    await asyncio.sleep(random.uniform(0, 3))  # concurrent callees out of step, as real ones are
    lines = callee_turns()
    for _ in range(turns):
        spoken = await call.say(next(lines))
        await call.wait_for_bot_to_speak(quiet=0.2)
        reply = call.first_voiced_at(after=spoken.last_voiced_at)
        result.overhead_ms.append((reply - spoken.last_voiced_at - endpointing) * 1000)
    if barge_in:
        spoken_at = time.monotonic()
        await call.say(next(lines))
        await call.wait_for_bot_to_speak(quiet=0)
        await asyncio.sleep(0.3)  # the bot is mid-sentence
        spoken = await call.say(next(lines))
        clear = next((c for c in call.clears if c > spoken_at and c > spoken.first_voiced_at), None)
        if clear is not None:
            result.barge_in_ms.append((clear - spoken.first_voiced_at - VAD_START_SECS) * 1000)


async def warm_up_callee(call: EmulatedCall) -> None:
    """One exchange, so what a server sets up once, on its first turn (clients, lazily imported
    modules), counts as the warm server's, not as the first measured call's."""
    await call.wait_for_bot_to_speak(quiet=0.2)
    await call.say(callee_line())
    await call.wait_for_bot_to_speak(quiet=0.2)


async def run_calls(
    server: BotServer, twilio: TwilioEmulator, count: int, callee, ramp_secs: float = 0.0, every_secs: float = 0.0
) -> list[EmulatedCall]:
    """Place `count` calls (at random over `ramp_secs`, or one every `every_secs`), each answered by
    `callee(call)`; returns them once streaming."""
    twilio.callee = callee
    async with httpx.AsyncClient(timeout=30) as http:

        async def dial(index: int) -> EmulatedCall:
            await asyncio.sleep(index * every_secs + random.uniform(0, ramp_secs))
            return twilio.calls[await place_call(server, twilio, http, index)]

        calls = await asyncio.gather(*(dial(i) for i in range(count)))
    while not all(call.stream_started_at for call in calls):
        await asyncio.sleep(0.05)
    return list(calls)


async def hang_up_all(calls: list[EmulatedCall]) -> None:
    await asyncio.wait_for(asyncio.gather(*(call.hang_up() for call in calls)), 30)


async def measure_call_overhead(server: BotServer, twilio: TwilioEmulator, result: LatencyResult, calls: int) -> None:
    """A call's CPU outside its conversation, one call at a time on a warm server: from the dial to
    the first words (the dial, the stream's setup, the pipeline's start; outcall also writes its
    record and synthesises the greeting), and from the hang-up until the server is quiet again
    (teardown; outcall also asks for the summary and closes the record). The idle server's own
    CPU over the same time is subtracted."""
    await asyncio.sleep(TEARDOWN_SECS)  # the warm-up call's teardown
    before, started = server.cpu_seconds(), time.monotonic()
    await asyncio.sleep(2)
    idle_rate = (server.cpu_seconds() - before) / (time.monotonic() - started)

    def cpu_ms_since(cpu: float, at: float) -> float:
        return (server.cpu_seconds() - cpu - idle_rate * (time.monotonic() - at)) * 1000

    for _ in range(calls):
        cpu, at = server.cpu_seconds(), time.monotonic()
        [call] = await run_calls(server, twilio, 1, lambda call: call.wait_for_bot_to_speak(quiet=0.2))
        while call.first_voiced_at(after=call.stream_started_at) is None:
            await asyncio.sleep(0.005)
        result.setup_cpu_ms.append(cpu_ms_since(cpu, at))
        await asyncio.sleep(0.5)
        cpu, at = server.cpu_seconds(), time.monotonic()
        await hang_up_all([call])
        await asyncio.sleep(TEARDOWN_SECS)
        result.teardown_cpu_ms.append(cpu_ms_since(cpu, at))


async def measure_latency(
    kind: str, twilio: TwilioEmulator, fakes: VendorFakes, turns: int, concurrency: int, speech_timeout: float, overhead_calls: int
) -> LatencyResult:
    server = await start_server(kind, twilio, fakes, speech_timeout)
    result = LatencyResult()
    endpointing = endpointing_secs(speech_timeout)
    try:
        per_call = max(1, turns // concurrency)
        done: list[asyncio.Future] = []

        async def callee(call: EmulatedCall):
            finished = asyncio.get_running_loop().create_future()
            done.append(finished)
            try:
                await conversation(call, per_call, endpointing, result, barge_in=True)
            finally:
                finished.set_result(None)

        warm_up = await run_calls(server, twilio, 1, lambda call: call.wait_for_bot_to_speak())
        await asyncio.sleep(1)
        await hang_up_all(warm_up)
        await measure_call_overhead(server, twilio, result, overhead_calls)
        calls = await run_calls(server, twilio, concurrency, callee, ramp_secs=float(os.environ.get("BENCH_RAMP_SECS", "0")))
        while len(done) < concurrency:
            await asyncio.sleep(0.05)
        await asyncio.gather(*done)
        await hang_up_all(calls)
        if kind == "outcall":
            result.server_ms = [ms - endpointing * 1000 for ms in await recorded_latencies_ms(server, calls)]
    finally:
        server.stop()
    return result


async def open_dashboards(server: BotServer, count: int) -> list[asyncio.Task]:
    """`count` signed-in console overview pages, each holding its live event stream open."""

    async def dashboard():
        async with httpx.AsyncClient(base_url=server.url, timeout=None, headers={"Accept": "text/html"}) as page:
            await page.post("/console/sign-in", data={"password": API_KEY}, headers={"Origin": server.url})
            (await page.get("/console")).raise_for_status()
            async with page.stream("GET", "/console/events", headers={"Accept": "text/event-stream"}) as events:
                async for _ in events.aiter_bytes():
                    pass

    return [asyncio.create_task(dashboard()) for _ in range(count)]


async def measure_cost(
    kind: str, twilio: TwilioEmulator, fakes: VendorFakes, n: int, window: float, speech_timeout: float,
    dashboards: int = 0, every_secs: float = 1.0,
) -> CostResult:
    """Calls start one every `every_secs`; `dashboards`: console pages kept open on the server
    during the window (outcall only)."""
    server = await start_server(kind, twilio, fakes, speech_timeout)
    endpointing = endpointing_secs(speech_timeout)
    logs: dict[str, CalleeLog] = {}
    overheads: list[float] = []
    first_words: list[float] = []
    talking = True
    finished: list[asyncio.Future] = []
    try:
        warm_up = await run_calls(server, twilio, 1, warm_up_callee)
        await asyncio.sleep(1)
        await hang_up_all(warm_up)
        await asyncio.sleep(1)
        idle_rss = server.rss_bytes()

        async def callee(call: EmulatedCall):
            done = asyncio.get_running_loop().create_future()
            finished.append(done)
            log = logs.setdefault(call.sid, CalleeLog())
            try:
                await call.wait_for_bot_to_speak(quiet=0.2)
                first_words.append(call.first_voiced_at(after=call.stream_started_at) - call.stream_started_at)
                lines = callee_turns()
                while talking:
                    spoken = await call.say(next(lines))
                    log.utterances.append(spoken)
                    await call.wait_for_bot_to_speak(quiet=0.2)
                    reply = call.first_voiced_at(after=spoken.last_voiced_at)
                    overheads.append((reply - spoken.last_voiced_at - endpointing) * 1000)
            finally:
                done.set_result(None)

        synthesised_before = fakes.synthesised_secs()
        calls = await run_calls(server, twilio, n, callee, every_secs=every_secs)
        pages = await open_dashboards(server, dashboards)
        await asyncio.sleep(min(3.0, window))  # every call past its greeting and into conversation
        lag = LoopLag()
        lag.start()
        overheads.clear()
        start, cpu_before, loop_before, peak_rss = time.monotonic(), server.cpu_seconds(), server.loop_cpu_seconds(), 0
        while time.monotonic() - start < window:
            peak_rss = max(peak_rss, server.rss_bytes())
            await asyncio.sleep(0.5)
        end, cpu_after, loop_after = time.monotonic(), server.cpu_seconds(), server.loop_cpu_seconds()
        lags = lag.stop()
        for page in pages:
            page.cancel()
        await asyncio.gather(*pages, return_exceptions=True)
        talking = False
        await asyncio.wait_for(asyncio.gather(*finished), 30)  # exchanges in progress finish
        await hang_up_all(calls)
        synthesised = fakes.synthesised_secs() - synthesised_before
    finally:
        server.stop()

    lateness = [late for call in calls for late in frame_lateness(call, logs.get(call.sid, CalleeLog()), start, end)]
    talk = sum(a.seconds for call in calls for a in call.bot_audio if start <= a.at < end and a.rms > VOICED_RMS)

    def replies_secs(call: EmulatedCall) -> float:  # what the bot said after the callee first spoke
        utterances = logs.get(call.sid, CalleeLog()).utterances
        first_spoke = utterances[0].first_voiced_at if utterances else float("inf")
        return sum(a.seconds for a in call.bot_audio if a.rms > VOICED_RMS and a.at > first_spoke)

    received = sum(replies_secs(call) for call in calls)
    return CostResult(
        calls=n,
        window_secs=round(end - start, 1),
        cpu_ms_per_call_sec=round((cpu_after - cpu_before) * 1000 / (n * (end - start)), 1),
        loop_cpu_ms_per_call_sec=round((loop_after - loop_before) * 1000 / (n * (end - start)), 1),
        rss_mb_per_call=round((peak_rss - idle_rss) / n / 2**20, 1),
        idle_rss_mb=round(idle_rss / 2**20),
        late_frames=sum(late > LATE_SECS for late in lateness),
        frames=len(lateness),
        max_late_ms=round(max(lateness, default=0) * 1000),
        p99_late_ms=round(percentile(lateness, 99) * 1000) if lateness else 0,
        bot_talk_share=round(talk / (n * (end - start)), 2),
        overhead_p50_ms=round(statistics.median(overheads)) if overheads else None,
        first_words_p95_ms=round(percentile(first_words, 95) * 1000) if first_words else None,
        audio_received_share=round(received / synthesised, 3) if synthesised else 0.0,
        load_generator_lag_p99_ms=round(percentile(lags, 99) * 1000, 1) if lags else 0.0,
    )


def ratio(ours: float | None, base: float | None) -> str:
    return f"{ours / base:.2f}×" if ours is not None and base is not None and base > 0 else "–"


def summarise_latency(results: dict[str, LatencyResult]) -> str:
    rows = ["| figure | outcall | baseline | ratio |", "|---|---|---|---|"]

    def row(name: str, values: dict[str, list[float]], q: int | None):
        figure = {k: (statistics.median(v) if q is None else percentile(v, q)) if v else None for k, v in values.items()}
        cells = [f"{figure[k]:.0f} ms" if figure[k] is not None else "–" for k in KINDS]
        rows.append(f"| {name} | {cells[0]} | {cells[1]} | {ratio(figure['outcall'], figure['baseline'])} |")

    first = {k: r.first_words_ms for k, r in results.items()}
    overhead = {k: r.overhead_ms for k, r in results.items()}
    barge = {k: r.barge_in_ms for k, r in results.items()}
    row(f"first words, median (n={len(first['outcall'])})", first, None)
    row(f"response overhead p50 (n={len(overhead['outcall'])} turns)", overhead, None)
    row("response overhead p95", overhead, 95)
    row(f"barge-in: speech → `clear`, minus VAD start, median (n={len(barge['outcall'])})", barge, None)
    server = {k: r.server_ms for k, r in results.items()}
    row(f"outcall's records: end of turn → first audio out, p50 (n={len(server['outcall'])})", server, None)
    row("outcall's records: end of turn → first audio out, p95", server, 95)
    setup = {k: r.setup_cpu_ms for k, r in results.items()}
    row(f"CPU per call outside the conversation: dial → first words, median (n={len(setup['outcall'])})", setup, None)
    row("CPU per call outside the conversation: hang-up → quiet", {k: r.teardown_cpu_ms for k, r in results.items()}, None)
    tail = statistics.median(vad_verdict_delay(line) for line in callee_lines()) * 1000
    rows.append("")
    rows.append(
        f"Of the response overhead, about {tail:.0f} ms is Silero's own: fed the callee's recordings, Pipecat's "
        f"Silero VAD declares the speech over {tail:.0f} ms (median over lines and frame alignments) after its last "
        "voiced frame plus `stop_secs`, in both bots alike. The records' figure is the server's own time: "
        "from the end of the endpointing wait to the reply's first audio leaving the process."
    )
    return "\n".join(rows)


def summarise_cost(results: dict[str, list[CostResult]]) -> str:
    rows = [
        "| N | CPU ms per call-second, in all (event loop) (outcall / baseline / ratio) | MB per call (outcall / baseline) "
        "| frames > 100 ms late (outcall / baseline) | worst frame (ms) | reply overhead p50 (ms) | first words p95 (ms) "
        "| bot talk share |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ours, base in zip(results["outcall"], results["baseline"]):
        rows.append(
            f"| {ours.calls} | {ours.cpu_ms_per_call_sec} ({ours.loop_cpu_ms_per_call_sec}) / "
            f"{base.cpu_ms_per_call_sec} ({base.loop_cpu_ms_per_call_sec}) / "
            f"{ratio(ours.cpu_ms_per_call_sec, base.cpu_ms_per_call_sec)} | {ours.rss_mb_per_call} / {base.rss_mb_per_call} "
            f"| {ours.late_frames} of {ours.frames} / {base.late_frames} of {base.frames} "
            f"| {ours.max_late_ms} / {base.max_late_ms} | {ours.overhead_p50_ms or '–'} / {base.overhead_p50_ms or '–'} "
            f"| {ours.first_words_p95_ms or '–'} / {base.first_words_p95_ms or '–'} "
            f"| {ours.bot_talk_share} / {base.bot_talk_share} |"
        )
    capacity = {
        kind: max((r.calls for r in runs if r.late_frames == 0), default=0) for kind, runs in results.items()
    }
    rows.append("")
    rows.append(f"Capacity (largest N with no frame > 100 ms late): outcall {capacity['outcall']}, baseline {capacity['baseline']}.")
    return "\n".join(rows)


def write_readme(text: str, block: str = "call-bench") -> None:
    """Replace the README's `<!-- {block}:start -->` … `<!-- {block}:end -->` block with `text`."""
    readme = ROOT / "README.md"
    content = readme.read_text()
    pattern = re.compile(rf"(<!-- {block}:start -->\n).*?(<!-- {block}:end -->)", re.S)
    if not pattern.search(content):
        raise SystemExit(f"README.md has no <!-- {block}:start --> … <!-- {block}:end --> block")
    readme.write_text(pattern.sub(lambda m: m.group(1) + text + "\n" + m.group(2), content))


async def main(args) -> dict:
    fakes = VendorFakes(REPLY_CHARS, VendorDelays(*args.vendor_delays))
    twilio = await TwilioEmulator(ACCOUNT_SID, AUTH_TOKEN, {OUR_NUMBER}).start()
    twilio.ring_secs = args.ring_secs
    latency: dict[str, LatencyResult] = {}
    cost: dict[str, list[CostResult]] = {kind: [] for kind in args.kinds}
    try:
        for kind in args.kinds:
            if args.turns:
                latency[kind] = await measure_latency(
                    kind, twilio, fakes, args.turns, args.concurrency, args.speech_timeout, args.overhead_calls
                )
                print(f"{kind} latency: {json.dumps(asdict(latency[kind]))}", file=sys.stderr)
        for n in args.calls:
            for kind in args.kinds:
                try:
                    result = await measure_cost(kind, twilio, fakes, n, args.window, args.speech_timeout, every_secs=args.every)
                except httpx.TimeoutException:  # so saturated it cannot take a call: larger N would fare no better
                    stopped = f"At N = {n} the {kind} server did not answer its dials within 30 s; the runs stopped there."
                    print(stopped, file=sys.stderr)
                    return {"latency": latency, "cost": cost, "stopped": stopped}
                cost[kind].append(result)
                print(f"{kind} N={n}: {json.dumps(asdict(result))}", file=sys.stderr)
    finally:
        await twilio.stop()
        fakes.stop()
    return {"latency": latency, "cost": cost, "stopped": None}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="*", default=[1, 10, 20, 40, 60], help="concurrent calls per cost run")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per cost run")
    parser.add_argument("--every", type=float, default=1.0, help="a cost run's calls start one every this many seconds")
    parser.add_argument("--turns", type=int, default=52, help="turns measured for latency (0 skips it)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent calls in the latency run")
    parser.add_argument("--overhead-calls", type=int, default=5, help="calls placed one at a time for the CPU outside a conversation")
    parser.add_argument("--speech-timeout", type=float, default=0.3, help="turn-stop wait after VAD stop, both bots")
    parser.add_argument("--turn-stop", choices=["smart_turn", "speech_timeout"], default="smart_turn",
                        help="how both servers end turns (smart_turn, outcall's default, ignores --speech-timeout)")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS, help="which servers to measure")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--readme", action="store_true", help="replace the results block in README.md")
    parser.add_argument("--workers", type=int, default=1,
                        help="outcall's WORKERS (> 1 needs --database-url postgresql+asyncpg://…; latency figures only: "
                             "CPU and memory are read from one process)")
    parser.add_argument("--database-url", help="outcall's DATABASE_URL (default: a fresh SQLite file)")
    parser.add_argument("--ring-secs", type=float, default=0.0, help="how long each phone rings before it is answered")
    parser.add_argument("--vendor-delays", type=float, nargs=2, default=[0.0, 0.0], metavar=("FINALIZE", "FIRST_TOKEN"),
                        help="seconds the fakes take: Deepgram's final transcript after Finalize, Gemini's first token")
    parser.add_argument("--ramp-secs", type=float, default=0.0, help="spread the latency run's calls over this long")
    args = parser.parse_args()
    os.environ["BENCH_TURN_STOP"] = args.turn_stop
    os.environ["BENCH_WORKERS"] = str(args.workers)
    os.environ["BENCH_RAMP_SECS"] = str(args.ramp_secs)
    if args.database_url:
        os.environ["BENCH_DATABASE_URL"] = args.database_url

    results = asyncio.run(main(args))
    if set(args.kinds) != set(KINDS):
        sys.exit(0)  # the raw figures went to stderr; the tables compare both servers
    if args.turn_stop == "smart_turn":
        turns = "turns ended by smart-turn v3 at VAD stop (0.2 s), both servers; overheads measured from VAD stop"
    else:
        turns = f"endpointing wait {VAD_STOP_SECS + args.speech_timeout:.1f} s (VAD stop 0.2 s + speech timeout {args.speech_timeout} s)"
    if any(args.vendor_delays):
        turns += (f"; vendor fakes delayed as real ones: Deepgram's final {args.vendor_delays[0] * 1000:.0f} ms "
                  f"after Finalize, Gemini's first token {args.vendor_delays[1] * 1000:.0f} ms")
    text = f"Machine: {machine()}; {turns}.\n"
    if results["latency"]:
        text += "\n" + summarise_latency(results["latency"]) + "\n"
    if args.calls:
        text += "\n" + summarise_cost(results["cost"]) + "\n"
    if results["stopped"]:
        text += "\n" + results["stopped"] + "\n"
    print(text)
    if args.json:
        runs = {k: results[k] for k in ("latency", "cost")}
        args.json.write_text(json.dumps({k: {kind: (asdict(v) if not isinstance(v, list) else [asdict(x) for x in v]) for kind, v in d.items()} for k, d in runs.items()}, indent=2))
    if args.readme:
        write_readme(text)
