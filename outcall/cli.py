"""The command line for campaigns, agents and the do-not-call list, on the server's database (DATABASE_URL).

    uv run python -m outcall campaign create "Spring reminders" --timezone America/New_York [--settings settings.json]
    uv run python -m outcall campaign import CAMPAIGN_ID contacts.csv [--phone-column mobile] [--errors errors.csv]
    uv run python -m outcall campaign start|pause|resume|stop CAMPAIGN_ID
    uv run python -m outcall campaign status [CAMPAIGN_ID]
    uv run python -m outcall agent create "Check-ups" [--profile profile.json]
    uv run python -m outcall agent update AGENT_ID [--name NAME] [--profile profile.json]
    uv run python -m outcall agent list | show AGENT_ID | delete AGENT_ID
    uv run python -m outcall dnc add +14155552671 [--reason "asked by email"]
    uv run python -m outcall dnc remove +14155552671

A running server picks up status changes at its next dispatcher pass (within two seconds).
"""

import argparse
import asyncio
import csv
import json
import os
import sys
from pathlib import Path

from pydantic import TypeAdapter, ValidationError
from tqdm import tqdm

from outcall.agent_store import AgentError, AgentStore
from outcall.agents import AgentProfile
from outcall.campaign_store import CampaignError, CampaignStore
from outcall.campaigns import CampaignSettings
from outcall.clock import SystemClock
from outcall.contact_file import ImportRefused
from outcall.contact_import import ContactImport
from outcall.database import Database
from outcall.do_not_call import DoNotCallList
from outcall.phone_numbers import PhoneNumber
from outcall.settings import Settings


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m outcall", description="Campaigns and the do-not-call list")
    kinds = root.add_subparsers(dest="kind", required=True)
    campaign = kinds.add_parser("campaign").add_subparsers(dest="action", required=True)
    create = campaign.add_parser("create", help="a new campaign, in draft")
    create.add_argument("name")
    create.add_argument("--timezone", required=True, help="IANA zone, e.g. America/New_York")
    create.add_argument("--settings", type=Path, help="JSON file of further campaign settings")
    imports = campaign.add_parser("import", help="import contacts from a CSV file")
    imports.add_argument("campaign_id")
    imports.add_argument("file", type=Path)
    imports.add_argument("--phone-column")
    imports.add_argument("--timezone-column")
    imports.add_argument("--encoding")
    imports.add_argument("--errors", type=Path, help="where to write every rejected row (default: FILE.errors.csv)")
    for action in ("start", "pause", "resume", "stop"):
        campaign.add_parser(action).add_argument("campaign_id")
    campaign.add_parser("status", help="one campaign's status and stats, or all campaigns").add_argument("campaign_id", nargs="?")
    agent = kinds.add_parser("agent").add_subparsers(dest="action", required=True)
    new_agent = agent.add_parser("create", help="a new agent, at version 1")
    new_agent.add_argument("name")
    new_agent.add_argument("--profile", type=Path, help="JSON file of its profile (prompt, greeting, outcomes…)")
    change = agent.add_parser("update", help="a new version: the profile file's fields replace the current ones")
    change.add_argument("agent_id")
    change.add_argument("--name")
    change.add_argument("--profile", type=Path)
    agent.add_parser("list")
    for action in ("show", "delete"):
        agent.add_parser(action).add_argument("agent_id")
    dnc = kinds.add_parser("dnc").add_subparsers(dest="action", required=True)
    add = dnc.add_parser("add")
    add.add_argument("phones", nargs="+")
    add.add_argument("--reason")
    dnc.add_parser("remove").add_argument("phone")
    return root


async def run(args: argparse.Namespace, database: Database) -> int:
    campaigns = CampaignStore(database, SystemClock())
    if args.kind == "dnc":
        numbers = TypeAdapter(list[PhoneNumber]).validate_python(args.phones if args.action == "add" else [args.phone])
        do_not_call = DoNotCallList(database)
        if args.action == "add":
            await do_not_call.add(numbers, args.reason, "cli")
            print(f"{len(numbers)} number(s) on the do-not-call list")
        elif not await do_not_call.remove(numbers[0]):
            print(f"{numbers[0]} was not on the do-not-call list", file=sys.stderr)
            return 1
        return 0
    if args.kind == "agent":
        return await run_agent(args, AgentStore(database, SystemClock()))
    if args.action == "create":
        extra = json.loads(args.settings.read_text()) if args.settings else {}
        campaign = await campaigns.create(args.name, CampaignSettings.model_validate({**extra, "timezone": args.timezone}))
        print(campaign.id)
    elif args.action == "import":
        await import_file(args, database, campaigns)
    elif args.action == "status":
        chosen = [await campaigns.get(args.campaign_id)] if args.campaign_id else await campaigns.all()
        for campaign in chosen:
            print(f"{campaign.id}  {campaign.name}  {campaign.status}" + (f" ({campaign.status_reason})" if campaign.status_reason else ""))
            if args.campaign_id:
                print(json.dumps((await campaigns.stats(campaign)).model_dump(), indent=2))
    else:
        campaign = await campaigns.change_status(args.campaign_id, args.action)
        print(f"{campaign.name}: {campaign.status}")
    return 0


async def run_agent(args: argparse.Namespace, agents: AgentStore) -> int:
    profile = json.loads(args.profile.read_text()) if getattr(args, "profile", None) else None
    if args.action == "create":
        print((await agents.create(args.name, AgentProfile.model_validate(profile or {}))).id)
    elif args.action == "update":
        current = (await agents.get(args.agent_id)).profile
        merged = AgentProfile.model_validate({**current, **profile}) if profile is not None else None
        agent = await agents.update(args.agent_id, args.name, merged)
        print(f"{agent.name}: version {agent.version}")
    elif args.action == "list":
        for agent in await agents.all():
            print(f"{agent.id}  {agent.name}  version {agent.version}")
    elif args.action == "show":
        agent = await agents.get(args.agent_id)
        print(json.dumps({"id": agent.id, "name": agent.name, "version": agent.version, "profile": agent.profile}, indent=2))
    else:
        await agents.delete(args.agent_id)
        print(f"deleted {args.agent_id}")
    return 0


async def import_file(args: argparse.Namespace, database: Database, campaigns: CampaignStore) -> None:
    campaign = await campaigns.get(args.campaign_id)
    errors_path = args.errors or args.file.with_name(args.file.name + ".errors.csv")
    with open(errors_path, "w", newline="") as errors_file, tqdm(
        total=args.file.stat().st_size, unit="B", unit_scale=True, desc=f"Importing {args.file.name}"
    ) as progress:
        errors = csv.writer(errors_file)
        errors.writerow(["row", "phone", "reason"])
        contact_import = ContactImport(
            database, campaign, args.file, now=campaigns.clock.now(),
            phone_column=args.phone_column, timezone_column=args.timezone_column, encoding=args.encoding,
            on_error=lambda e: errors.writerow([e.row, e.phone, e.reason]),
            on_progress=lambda done: progress.update(done - progress.n),
        )
        result = await contact_import.run()
    print(f"Imported {result.imported} contacts; rejected {result.rejected} rows" + (f" (see {errors_path})" if result.rejected else ""))
    if not result.rejected:
        os.remove(errors_path)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    async def with_database() -> int:
        database = Database(Settings().database_url)
        await database.migrate()
        try:
            return await run(args, database)
        finally:
            await database.close()

    try:
        return asyncio.run(with_database())
    except (CampaignError, AgentError, ImportRefused, ValidationError, ValueError) as e:
        print(f"error: {getattr(e, 'message', None) or e}", file=sys.stderr)
        return 2
