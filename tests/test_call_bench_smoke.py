"""The call benchmarks still run: both servers, a latency turn and two concurrent calls; the test
phone beside a phone call, one turn each.

Benchmarks are not tests: nothing here checks a timing, only that every figure was measured.
"""

import json
import subprocess
import sys
from pathlib import Path

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
