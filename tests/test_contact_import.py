"""Importing contacts: every good row kept, every bad row reported with its line and reason,
whatever the file's state, through the API and the command line."""

import asyncio
import random
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import func, select

from outcall.campaigns import CampaignSettings
from outcall.contact_file import ImportRefused
from outcall.contact_import import ContactImport
from outcall.database import Database, uninterrupted, utcnow
from outcall.models import Campaign, Contact
from tests.campaign_helpers import contacts

ROOT = Path(__file__).parent.parent


async def import_csv(server, campaign_id: str, body: bytes, **params):
    return await server.post(f"/campaigns/{campaign_id}/contacts", content=body, params=params, headers={"Content-Type": "text/csv"})


async def create(server, **settings) -> str:
    response = await server.post("/campaigns", {"name": "import", "settings": {"timezone": "America/Chicago", **settings}})
    return response.json()["id"]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)  # two ways of storing rows
async def test_bad_rows_are_reported_and_good_rows_kept(server):
    await server.post("/do-not-call", {"phones": ["+12125550105"], "reason": "asked"})
    campaign_id = await create(server)
    body = (
        "Mobile Number,First Name,Time Zone\n"
        "+1 (212) 555-0101,Ada,\n"  # punctuation is fine
        "+14155550101,Grace,Europe/London\n"  # the file's zone wins over the number's
        "+18005550123,Toll,\n"  # spans every North American zone: the campaign's
        "2125550102,NoCountry,\n"
        "+15555550123,Fake,\n"
        "+14155550101,Again,\n"
        "+12125550103,Extra,,field\n"
        "+12125550104,Moon,Mars/Base\n"
        ",Nobody,\n"
        "\n"
        "+442079460958,London,\n"
        "+12125550105,Listed,\n"
    ).encode()
    response = await import_csv(server, campaign_id, body)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["imported"], report["rejected"], report["errors_truncated"]) == (4, 7, False)
    reasons = {e["row"]: e["reason"] for e in report["errors"]}
    assert "no country code" in reasons[5] and "default_country" in reasons[5]
    assert "not a valid phone number" in reasons[6]
    assert reasons[7] == "duplicate of row 3"
    assert reasons[8] == "has 4 fields but the header has 3"
    assert "unknown time zone 'Mars/Base'" in reasons[9]
    assert reasons[10] == "no phone number"
    assert reasons[13] == "on the do-not-call list"
    stored = await contacts(server, campaign_id)
    assert {p: c["timezone"] for p, c in stored.items()} == {
        "+12125550101": "America/New_York",
        "+14155550101": "Europe/London",
        "+18005550123": "America/Chicago",
        "+442079460958": "Europe/London",
    }
    assert stored["+12125550101"]["variables"] == {"first_name": "Ada"}
    assert {c["state"] for c in stored.values()} == {"pending"}

    # A number already in the campaign fails the first attempt at storing its group; the group's
    # new numbers are still stored, in the same transaction.
    again = (await import_csv(server, campaign_id, b"phone\n+12125550106\n+12125550101\n+12125550107\n")).json()
    assert (again["imported"], again["errors"]) == (2, [{"row": 3, "phone": "+12125550101", "reason": "already in this campaign"}])
    assert set(await contacts(server, campaign_id)) == set(stored) | {"+12125550106", "+12125550107"}


async def test_whole_file_problems_import_nothing_and_say_how_to_fix_them(server):
    campaign_id = await create(server, greeting="Hi {first_name}, about {product}")
    missing_phone = await import_csv(server, campaign_id, b"name,email\nAda,ada@example.com\n")
    assert missing_phone.status_code == 422
    assert "no phone column" in missing_phone.json()["detail"] and "name, email" in missing_phone.json()["detail"]
    missing_variable = await import_csv(server, campaign_id, b"phone,first_name\n+12125550101,Ada\n")
    assert missing_variable.status_code == 422 and "{product}" in missing_variable.json()["detail"]
    named = await import_csv(server, campaign_id, b"cell,first_name,product\n+12125550101,Ada,tea\n", phone_column="nope")
    assert named.status_code == 422 and "no column 'nope'" in named.json()["detail"]
    assert await contacts(server, campaign_id) == {}


async def test_encodings(server):
    campaign_id = await create(server, default_country="US")
    latin1 = "phone,name\n(212) 555-0101,Zoë\n(212) 555-0102,Ann\n".encode("latin-1")
    report = (await import_csv(server, campaign_id, latin1)).json()
    assert report["imported"] == 1 and "not valid utf-8 (byte 0xeb" in report["errors"][0]["reason"]
    assert "encoding=latin-1" in report["errors"][0]["reason"]
    retried = (await import_csv(server, campaign_id, latin1, encoding="latin-1")).json()
    assert retried["imported"] == 1  # Zoë now; Ann is already in
    utf16 = "phone,name\n+12125550103,Zoë\n".encode("utf-16")  # with its byte-order mark
    assert (await import_csv(server, campaign_id, utf16)).json()["imported"] == 1
    with_bom = b"\xef\xbb\xbfphone,name\n+12125550104,Bo\n"
    assert (await import_csv(server, campaign_id, with_bom)).json()["imported"] == 1
    names = {c["variables"]["name"] for c in (await contacts(server, campaign_id)).values()}
    assert names == {"Ann", "Zoë", "Bo"}


@uninterrupted
async def add_campaign(database: Database, campaign: Campaign) -> None:
    async with database.write() as session:
        session.add(campaign)


async def test_a_large_file_streams_through_with_its_bad_rows_reported(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/large.db")
    await database.migrate()
    campaign = Campaign(id="c1", name="large", settings=CampaignSettings(timezone="UTC").model_dump(mode="json"))
    await add_campaign(database, campaign)
    rng = random.Random(7)
    path = tmp_path / "contacts.csv"
    numbers = rng.sample(range(2_000_000, 9_999_999), 60_000)
    with path.open("w") as f:
        f.write("phone,name\n")
        for i, n in enumerate(numbers):
            f.write(f"+1212{n},Person {i}\n" if i % 10_000 else f"not-a-number,Person {i}\n")
    progress: list[int] = []
    result = await ContactImport(database, campaign, path, now=utcnow(), on_progress=progress.append).run()
    assert (result.imported, result.rejected) == (59_994, 6)
    assert [e.row for e in result.errors] == [2 + i for i in range(0, 60_000, 10_000)]
    assert progress[-1] == path.stat().st_size and progress == sorted(progress) and len(progress) >= 6
    with pytest.raises(ImportRefused):
        empty = tmp_path / "empty.csv"
        empty.write_bytes(b"")
        await ContactImport(database, campaign, empty, now=utcnow()).run()
    await database.close()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_two_imports_into_one_campaign_at_once_store_each_number_once(database_url, tmp_path):
    """Two overlapping files imported side by side (PostgreSQL's path checks which numbers are
    new and then COPYs them): every number stored once, imported by one import and reported as
    already in the campaign by the other."""
    database = Database(database_url)
    await database.migrate()
    campaign = Campaign(id="c2", name="twice", settings=CampaignSettings(timezone="UTC").model_dump(mode="json"))
    await add_campaign(database, campaign)
    numbers = random.Random(3).sample(range(2_000_000, 9_999_999), 30_000)
    files = []
    for name, part in (("a", numbers[:20_000]), ("b", numbers[10_000:])):  # 10,000 numbers in both
        files.append(tmp_path / f"{name}.csv")
        files[-1].write_text("phone\n" + "".join(f"+1212{n}\n" for n in part))
    results = await asyncio.gather(*(ContactImport(database, campaign, path, now=utcnow()).run() for path in files))
    assert sum(r.imported for r in results) == 30_000 and sum(r.rejected for r in results) == 10_000
    assert {e.reason for r in results for e in r.errors} == {"already in this campaign"}

    @uninterrupted
    async def stored() -> int:
        async with database.session() as session:
            return await session.scalar(select(func.count()).select_from(Contact).where(Contact.campaign_id == "c2"))

    assert await stored() == 30_000
    await database.close()


async def test_the_command_line_imports_with_a_progress_bar_and_an_errors_file(tmp_path):
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db", "PATH": "/usr/bin:/bin"}

    async def cli(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "outcall", *args, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        return process.returncode, out.decode(), err.decode()

    code, out, err = await cli("campaign", "create", "Reminders", "--timezone", "America/New_York")
    assert code == 0, err
    campaign_id = out.strip()
    contacts_file = tmp_path / "contacts.csv"
    contacts_file.write_text("phone,name\n+12125550101,Ada\nnope,Bad\n")
    code, out, err = await cli("campaign", "import", campaign_id, str(contacts_file))
    assert code == 0, err
    assert "Imported 1 contacts; rejected 1 rows" in out and "Importing contacts.csv" in err and "100%" in err
    assert (tmp_path / "contacts.csv.errors.csv").read_text().splitlines()[1].startswith("3,nope,")
    code, out, _ = await cli("campaign", "start", campaign_id)
    assert code == 0 and "running" in out
    code, out, _ = await cli("campaign", "status", campaign_id)
    assert '"pending": 1' in out
    code, _, err = await cli("campaign", "resume", campaign_id)
    assert code == 2 and "Cannot resume" in err
    code, out, _ = await cli("dnc", "add", "+12125550101", "--reason", "asked by letter")
    assert code == 0
    code, _, err = await cli("dnc", "add", "12345")
    assert code == 2 and "E.164" in err


async def test_an_import_stopped_midway_keeps_whole_groups_and_hands_the_database_back_as_it_was(tmp_path):
    """SQLite imports write on a connection of their own (a larger page cache, the WAL checkpointed
    less often). Cancelled while its next group waits for the writer another operation holds:
    that group still goes in whole, the import's WAL is checkpointed, its connection goes (so no
    pooled connection keeps its settings), and the next writer writes."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/stopped.db")
    await database.migrate()
    campaign = Campaign(id="c3", name="stopped", settings=CampaignSettings(timezone="UTC").model_dump(mode="json"))
    await add_campaign(database, campaign)
    path = tmp_path / "contacts.csv"
    numbers = random.Random(5).sample(range(2_000_000, 9_999_999), 40_000)
    path.write_text("phone\n" + "".join(f"+1212{n}\n" for n in numbers))
    other = await database.engine.connect()  # as a server holds (else closing the import's checkpoints)
    await other.exec_driver_sql("SELECT 1")
    first_group_stored = asyncio.Event()
    importing = asyncio.ensure_future(
        ContactImport(database, campaign, path, now=utcnow(), on_progress=lambda _: first_group_stored.set()).run()
    )

    @uninterrupted
    async def hold_the_writer() -> None:  # the import's next group waits for it
        async with database.write():
            await asyncio.sleep(0.5)

    await asyncio.wait_for(first_group_stored.wait(), timeout=60)
    holding = asyncio.ensure_future(hold_the_writer())
    await asyncio.sleep(0.25)
    importing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(importing, timeout=60)
    await holding

    # Every row the import committed is in the database file itself, not left in the WAL.
    copy = tmp_path / "copy.db"
    copy.write_bytes((tmp_path / "stopped.db").read_bytes())
    with closing(sqlite3.connect(copy)) as checkpointed:
        in_file = checkpointed.execute("SELECT count(*) FROM contacts").fetchone()[0]
    pooled = [await database.engine.connect() for _ in range(database.engine.pool.checkedin())]
    cache_sizes = [(await c.exec_driver_sql("PRAGMA cache_size")).scalar() for c in pooled]
    for c in (*pooled, other):
        await c.close()

    @uninterrupted
    async def count_and_write() -> int:
        async with database.write() as session:
            session.add(Campaign(id="c4", name="after", settings=CampaignSettings(timezone="UTC").model_dump(mode="json")))
            return await session.scalar(select(func.count()).select_from(Contact).where(Contact.campaign_id == "c3"))

    count = await asyncio.wait_for(count_and_write(), timeout=30)
    assert count in (10_000, 20_000, 30_000) and in_file == count  # whole transactions of 10,000 rows
    assert cache_sizes and set(cache_sizes) == {-2000}  # SQLite's default: the import's connection is gone
    await database.close()
