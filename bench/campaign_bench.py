"""Campaign benchmark: contact import throughput, and the cost of one dispatch decision as a
campaign's contact table grows. Not a test: it prints a Markdown table for the README.

    uv run python bench/campaign_bench.py [--sizes 100000 1000000] [--postgres postgresql+asyncpg://…]

The import figure is the whole path (CSV parsing, E.164 validation and time zone of every
number, duplicate and do-not-call checks, inserts: COPY on PostgreSQL). The process's peak
RSS after each import shows whether memory stays flat as files grow. A dispatch decision is one `Dispatcher.claim` pass:
lock the campaign, check the circuit breaker, count calls in flight, pick and claim the next
due contact, write its call record.
"""

import argparse
import asyncio
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine  # noqa: E402
from outcall.campaigns import CampaignSettings  # noqa: E402
from outcall.calling_windows import WEEKDAYS  # noqa: E402
from outcall.call_store import CallStore  # noqa: E402
from outcall.contact_import import ContactImport  # noqa: E402
from outcall.database import Database, uninterrupted  # noqa: E402
from outcall.dispatcher import Dispatcher  # noqa: E402
from outcall.models import Campaign, CampaignStatus  # noqa: E402
from outcall.settings import Settings  # noqa: E402

AREA_CODES = ["212", "646", "415", "310", "312", "206", "305", "617", "404", "713"]


class SteppedClock:
    def __init__(self, start: datetime):
        self.at = start

    def now(self) -> datetime:
        return self.at


def write_contacts(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    numbers = rng.sample(range(10 * 8_000_000), rows)
    with path.open("w") as f:
        f.write("phone,first_name,company\n")
        f.writelines(f"+1{AREA_CODES[n % 10]}{2_000_000 + n // 10},Person{i},Acme\n" for i, n in enumerate(numbers))


@uninterrupted
async def new_campaign(database: Database) -> Campaign:
    always = {day: [{"start": "00:00", "end": "23:59"}] for day in WEEKDAYS}
    settings = CampaignSettings(
        timezone="America/New_York", calling_windows=always, allow_outside_legal_hours=True,
        max_concurrent_calls=500, calls_per_second=1,
    )
    campaign = Campaign(id=str(uuid.uuid4()), name="bench", status=CampaignStatus.DRAFT.value, settings=settings.model_dump(mode="json"))
    async with database.write() as session:
        session.add(campaign)
    return campaign


async def import_rate(database: Database, path: Path, rows: int) -> tuple[float, Campaign]:
    campaign = await new_campaign(database)
    started = time.perf_counter()
    result = await ContactImport(database, campaign, path, now=datetime(2026, 1, 1, tzinfo=UTC)).run()
    elapsed = time.perf_counter() - started
    assert result.imported + result.rejected == rows, result
    return rows / elapsed, campaign


@uninterrupted
async def start(database: Database, campaign: Campaign) -> None:
    async with database.write() as session:
        (await session.get(Campaign, campaign.id)).status = CampaignStatus.RUNNING.value


async def decision_ms(database: Database, campaign: Campaign, decisions: int = 60) -> float:
    await start(database, campaign)
    clock = SteppedClock(datetime(2026, 6, 1, 15, tzinfo=UTC))
    settings = Settings(_env_file=None, twilio_phone_number="+14155550100")
    dispatcher = Dispatcher(database, CallStore(database, clock=clock), settings, twilio=None, clock=clock)
    times = []
    for _ in range(decisions):
        clock.at += timedelta(seconds=1)  # one dial a second: each pass may claim one contact
        started = time.perf_counter()
        dials = await dispatcher.claim(campaign.id)
        times.append((time.perf_counter() - started) * 1000)
        assert len(dials) == 1
    return statistics.median(times[10:])


async def bench(url: str, label: str, sizes: list[int], files: dict[int, Path]) -> list[str]:
    database = Database(url)
    await database.migrate()
    lines = []
    for rows in sizes:
        rate, campaign = await import_rate(database, files[rows], rows)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak so far
        cost = await decision_ms(database, campaign)
        lines.append(f"| {label} | {rows:,} | {rate:,.0f} | {peak_mb:.0f} | {cost:.2f} |")
        print(lines[-1], flush=True)
    await database.close()
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--postgres", help="an empty PostgreSQL database to use (postgresql+asyncpg://…)")
    args = parser.parse_args()
    print(f"Machine: {machine()}\n")
    print("| engine | contacts | import rows/s | process peak RSS after it (MB) | dispatch decision (median ms) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        files = {rows: Path(tmp) / f"contacts_{rows}.csv" for rows in args.sizes}
        with ProcessPoolExecutor(1) as writer:  # in another process: its memory is not the import's
            list(writer.map(write_contacts, files.values(), files.keys(), files.keys()))
        await bench(f"sqlite+aiosqlite:///{tmp}/bench.db", "SQLite", args.sizes, files)
        if args.postgres:
            await bench(args.postgres, "PostgreSQL", args.sizes, files)


if __name__ == "__main__":
    asyncio.run(main())
