"""Console benchmark: the operator console's pages and export over a large call table, and what
open dashboards cost a server carrying calls. Not a test: it prints Markdown for the README.

    uv run python bench/console_bench.py [--calls 100000] [--postgres] [--dashboards 20 --live-calls 10]

Pages: a server process (`server.py`, as users run it) over a database seeded with `--calls`
records (transcripts, timelines, variables; 10 % placed today, 100 in progress, a fifth in one
campaign). Each page is fetched by a signed-in client, sequentially; the figure is the time to
the last byte over 127.0.0.1, an upper bound of the server's own time. The export streams every
record; its rate and the server's peak RSS growth during it are reported.

Dashboards: the call benchmark's cost run (bench/call_bench.py) at `--live-calls` calls, once
alone and once with `--dashboards` signed-in overview pages holding their event streams, in the
same run: the server's CPU per call-second and the outbound frames more than 100 ms late.
"""

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import call_bench  # noqa: E402
from call_harness import ACCOUNT_SID, API_KEY, AUTH_TOKEN, OUR_NUMBER, VendorFakes, percentile  # noqa: E402
from outcall.database import Database, uninterrupted  # noqa: E402
from outcall.models import CallRecord, Campaign  # noqa: E402
from outcall.settings import Settings  # noqa: E402
from tests.conftest import create_postgres_database, drop_postgres_database, free_port, start_server_process  # noqa: E402

FINAL = ["completed"] * 6 + ["no-answer", "busy", "failed", "canceled"]
OUTCOMES = ["interested", "not_interested", "callback_requested", "voicemail", "other", None]
LINES = [
    "Hi, this is Sam from Acme Clinic about your appointment on Tuesday.",
    "Oh yes, I was wondering when you would call.",
    "Does ten in the morning still work for you?",
    "Could we make it a bit later, maybe eleven?",
    "Eleven works. I have moved it for you. Anything else?",
    "No, that's all. Thank you, goodbye.",
]


def call_rows(count: int, campaign_id: str, now: datetime, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        today = i % 10 == 0
        created = now - timedelta(seconds=rng.uniform(0, 8 * 3600) if today else rng.uniform(86400, 30 * 86400))
        live = i < 100
        status = "in-progress" if live else rng.choice(FINAL)
        answered = status in ("completed", "in-progress")
        start = created + timedelta(seconds=3)
        rows.append({
            "id": str(uuid.UUID(int=rng.getrandbits(128))),
            "call_sid": f"CA{i:032x}",
            "to_number": f"+1212{5_000_000 + i:07d}",
            "from_number": "+14155550100",
            "variables": {"first_name": f"Person{i}", "company": "Acme"},
            "call_metadata": {"crm_id": i},
            "config": {},
            "status": status,
            "timeline": [{"status": s, "at": (created + timedelta(seconds=k)).isoformat()}
                         for k, s in enumerate(["queued", "initiated", "ringing", "in-progress"] + ([] if live else [status]))],
            "answered_by": "human" if answered else None,
            "voicemail_action": "off",
            "ring_secs": 3.0,
            "talk_secs": None if live or not answered else rng.uniform(20, 180),
            "end_reason": None if live else ("bot-ended" if answered else status),
            "outcome": None if live or not answered else rng.choice(OUTCOMES),
            "outcome_corrections": [],
            "summary": None if live else "The callee moved the appointment to eleven.",
            "transcript": [{"speaker": "bot" if k % 2 == 0 else "callee", "text": line,
                            "started_at": (start + timedelta(seconds=5 * k)).isoformat(), "latency_ms": 450 if k % 2 == 0 else None,
                            "interrupted": False} for k, line in enumerate(LINES if answered else [])],
            "latencies_ms": [450, 450, 450] if answered else [],
            "report_sequence": 3,
            "created_at": created,
            "updated_at": created + timedelta(seconds=60),
            "answered_at": start if answered else None,
            "ended_at": None if live else created + timedelta(seconds=90),
            "ended_event_sent": not live,
            "campaign_id": campaign_id if i % 5 == 0 else None,
            "contact_id": None,
        })
    return rows


@uninterrupted
async def seed(database: Database, count: int) -> tuple[str, str]:
    """Insert `count` call records and one campaign; returns (campaign id, a call's number)."""
    from sqlalchemy import insert

    from outcall.campaigns import CampaignSettings

    now = datetime.now(UTC)
    campaign_id = str(uuid.uuid4())
    async with database.write() as session:
        session.add(Campaign(id=campaign_id, name="Spring check-ups", status="running",
                             settings=CampaignSettings(timezone="America/New_York").model_dump(mode="json")))
    rows = call_rows(count, campaign_id, now)
    for start in range(0, count, 5000):
        async with database.write() as session:
            await session.execute(insert(CallRecord), rows[start : start + 5000])
    return campaign_id, rows[count // 2]["to_number"]


async def timed_get(client: httpx.AsyncClient, path: str, params: dict | None = None) -> float:
    started = time.perf_counter()
    response = await client.get(path, params=params)
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return (time.perf_counter() - started) * 1000


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * 4096


async def measure_pages(database_url: str, count: int, requests: int) -> dict:
    database = Database(database_url)
    await database.migrate()
    started = time.perf_counter()
    campaign_id, number = await seed(database, count)
    seeded_secs = time.perf_counter() - started
    await database.close()

    port = free_port()
    settings = Settings(_env_file=None, port=port, server_url=f"http://127.0.0.1:{port}", database_url=database_url,
                        dialout_api_key=API_KEY, log_level="WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        process = await start_server_process(settings, Path(tmp) / "server.log")
        try:
            async with httpx.AsyncClient(base_url=settings.server_url, timeout=120, headers={"Accept": "text/html"}) as client:
                await client.post("/console/sign-in", data={"password": API_KEY}, headers={"Origin": settings.server_url})
                listing = (await client.get("/console/calls")).text
                older = re.search(r'cursor=([^"&]+)', listing).group(1)
                call_id = re.search(r'href="/console/calls/([0-9a-f-]{36})"', listing).group(1)
                pages = {
                    "overview (`/console`)": ("/console", None),
                    "calls, newest 50": ("/console/calls", None),
                    "calls, next page (cursor)": ("/console/calls", {"cursor": older.replace("%3D", "=")}),
                    "calls, status=no-answer": ("/console/calls", {"status": "no-answer"}),
                    "calls, outcome=interested": ("/console/calls", {"outcome": "interested"}),
                    "calls, one campaign": ("/console/calls", {"campaign_id": campaign_id}),
                    "calls, one number": ("/console/calls", {"number": number}),
                    "call detail": (f"/console/calls/{call_id}", None),
                    "campaign page (stats over its calls)": (f"/console/campaigns/{campaign_id}", None),
                }
                timings = {}
                for name, (path, params) in pages.items():
                    for _ in range(3):
                        await timed_get(client, path, params)
                    samples = [await timed_get(client, path, params) for _ in range(requests)]
                    timings[name] = (statistics.median(samples), percentile(samples, 95))

                before = rss_bytes(process.pid)
                peak, export_started = before, time.perf_counter()
                async with client.stream("GET", "/console/calls/export.csv") as response:
                    async for _ in response.aiter_bytes():
                        peak = max(peak, rss_bytes(process.pid))
                export_secs = time.perf_counter() - export_started
        finally:
            process.terminate()
            await process.wait()
    return {
        "seeded_secs": round(seeded_secs, 1),
        "pages": {k: [round(v[0], 1), round(v[1], 1)] for k, v in timings.items()},
        "export_rows_per_sec": round(count / export_secs),
        "export_secs": round(export_secs, 1),
        "export_rss_growth_mb": round((peak - before) / 2**20, 1),
    }


async def measure_dashboards(live_calls: int, dashboards: int, window: float) -> dict:
    from tests.fakes.twilio import TwilioEmulator

    fakes = VendorFakes(call_bench.REPLY_CHARS)
    twilio = await TwilioEmulator(ACCOUNT_SID, AUTH_TOKEN, {OUR_NUMBER}).start()
    twilio.ring_secs = 0.0
    results = {}
    try:
        for open_pages in (0, dashboards, 0, dashboards):  # interleaved: the machine's drift hits both alike
            result = await call_bench.measure_cost("outcall", twilio, fakes, live_calls, window, 0.3, dashboards=open_pages)
            results.setdefault(open_pages, []).append(result)
            print(f"{live_calls} calls, {open_pages} dashboards: {json.dumps(result.__dict__)}", file=sys.stderr)
    finally:
        await twilio.stop()
        fakes.stop()
    return results


async def main(args) -> str:
    engines = {"SQLite": False}
    if args.postgres:
        engines["PostgreSQL"] = True
    out = [f"{args.calls:,} call records; each page fetched {args.requests} times, sequentially, by a signed-in client.", ""]
    measured = {}
    for engine, postgres in engines.items():
        if not postgres:
            tmp = tempfile.mkdtemp()
            url = f"sqlite+aiosqlite:///{tmp}/console.db"
        else:
            url = await create_postgres_database()
        try:
            measured[engine] = await measure_pages(url, args.calls, args.requests)
            print(f"{engine}: {json.dumps(measured[engine])}", file=sys.stderr)
        finally:
            if postgres:
                await drop_postgres_database(url)
    names = list(next(iter(measured.values()))["pages"])
    out.append("| page | " + " | ".join(f"{e} p50 / p95 (ms)" for e in measured) + " |")
    out.append("|---|" + "---|" * len(measured))
    for name in names:
        out.append(f"| {name} | " + " | ".join(f"{m['pages'][name][0]} / {m['pages'][name][1]}" for m in measured.values()) + " |")
    out.append("| export, rows per second (RSS growth during it) | " + " | ".join(
        f"{m['export_rows_per_sec']:,} ({m['export_rss_growth_mb']} MB)" for m in measured.values()) + " |")
    if args.dashboards:
        runs = await measure_dashboards(args.live_calls, args.dashboards, args.window)
        out += ["", f"{args.live_calls} calls on one server, alone and with {args.dashboards} open overview pages (two runs each, interleaved):", "",
                "| open dashboards | CPU ms per call-second | frames > 100 ms late | worst frame (ms) | reply overhead p50 (ms) |",
                "|---|---|---|---|---|"]
        for pages, results in runs.items():
            cpu = statistics.median(r.cpu_ms_per_call_sec for r in results)
            out.append(f"| {pages} | {cpu:.1f} ({', '.join(str(r.cpu_ms_per_call_sec) for r in results)}) "
                       f"| {', '.join(f'{r.late_frames} of {r.frames}' for r in results)} "
                       f"| {', '.join(str(r.max_late_ms) for r in results)} | {', '.join(str(r.overhead_p50_ms) for r in results)} |")
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="call records to seed")
    parser.add_argument("--requests", type=int, default=40, help="timed requests per page")
    parser.add_argument("--postgres", action="store_true", help="also measure on PostgreSQL (OUTCALL_TEST_POSTGRES, as the tests)")
    parser.add_argument("--dashboards", type=int, default=20, help="open overview pages beside the calls (0 skips it)")
    parser.add_argument("--live-calls", type=int, default=10, help="calls the server carries in the dashboards run")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per dashboards run")
    print(asyncio.run(main(parser.parse_args())))
