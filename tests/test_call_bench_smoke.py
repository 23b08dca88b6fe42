"""The call benchmarks still run: both servers, a latency turn and two concurrent calls; the test
phone beside a phone call, one turn each.

Benchmarks are not tests: nothing here checks a timing, only that every figure was measured,
and that a late frame is counted as the callee would hear it.
"""

import json
import subprocess
import sys
from pathlib import Path

from bench.call_harness import CalleeLog, frame_lateness
from tests.fakes.twilio import BotAudio, EmulatedCall, Utterance
from tests.test_console_browser import require_chromium

ROOT = Path(__file__).resolve().parent.parent


def test_call_bench_smoke_run(tmp_path):
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "bench/call_bench.py", "--calls", "2", "--window", "4", "--turns", "1",
         "--concurrency", "1", "--overhead-calls", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| response overhead p50" in run.stdout and "Capacity" in run.stdout

    results = json.loads(out.read_text())
    for kind in ("outcall", "baseline"):
        latency = results["latency"][kind]
        assert len(latency["first_words_ms"]) == 1 and len(latency["overhead_ms"]) == 1
        assert len(latency["setup_cpu_ms"]) == len(latency["teardown_cpu_ms"]) == 1 and latency["setup_cpu_ms"][0] > 0
        [cost] = results["cost"][kind]
        assert cost["calls"] == 2 and cost["frames"] > 0 and cost["cpu_ms_per_call_sec"] > 0
        assert 0.9 < cost["audio_received_share"] < 1.2  # every reply the fake TTS made was heard


def test_browser_call_bench_smoke_run(tmp_path):
    require_chromium()
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "bench/browser_call_bench.py", "--turns", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| response p50" in run.stdout
    results = json.loads(out.read_text())
    assert len(results["phone"]["first_words_ms"]) == len(results["phone"]["overhead_ms"]) == 1
    assert len(results["browser"]["first_words_ms"]) == len(results["browser"]["response_ms"]) == 1


def test_late_frames_are_gaps_within_a_reply_not_the_pause_before_the_next():
    call = EmulatedCall("CA1", "AC1", "+15550100", "+15550199", "https://example.test", "POST", None)
    loud, hush = 3000.0, 0.0

    def reply(at: float, frames: int, rms: float = loud) -> None:
        call.bot_audio.extend(BotAudio(at=at + i * 0.02, rms=rms) for i in range(frames))

    reply(0.0, 50)  # a one-second reply
    reply(1.0, 5, hush)  # its silent tail, still arriving...
    log = CalleeLog([Utterance(first_voiced_at=1.05, last_voiced_at=3.0)])  # ...as the callee starts
    reply(3.6, 25)  # the next reply, after the callee's line: response time, not a late frame
    reply(4.4, 25)  # half a second after the audio before it has played: a gap the callee hears

    lateness = frame_lateness(call, log, since=0.0, until=10.0)
    assert [round(late, 2) for late in lateness if late > 0.001] == [0.3]


def test_a_stall_the_callee_spoke_into_is_the_late_frame_not_the_next_reply():
    call = EmulatedCall("CA1", "AC1", "+15550100", "+15550199", "https://example.test", "POST", None)
    call.bot_audio.extend(BotAudio(at=i * 0.02, rms=3000.0) for i in range(50))  # a reply...
    call.bot_audio.extend(BotAudio(at=1.35 + i * 0.02, rms=3000.0) for i in range(10))  # ...stalls 0.35 s
    log = CalleeLog([Utterance(first_voiced_at=1.25, last_voiced_at=3.2)])  # the callee took it for the end
    call.bot_audio.extend(BotAudio(at=3.8 + i * 0.02, rms=3000.0) for i in range(25))  # the reply to the callee

    lateness = frame_lateness(call, log, since=0.0, until=10.0)
    assert [round(late, 2) for late in lateness if late > 0.001] == [0.35]
