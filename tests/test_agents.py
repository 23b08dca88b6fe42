"""Agents (outcall/agents.py): saved and versioned, run from /dialout and from campaigns, each
call recording the version it ran, so versions compare."""

import csv
import io
from datetime import UTC, datetime

import pytest

from tests.campaign_helpers import ALL_DAY, contacts, new_campaign, wait_for
from tests.conftest import CALLEE_NUMBER, MovableClock, conversation

PROFILE = {
    "prompt": "You book check-ups for Acme Clinic. The patient is {name}.",
    "greeting": "Hi {name}, this is Acme Clinic calling about your check-up.",
    "variables": {"clinic": "Acme"},
    "outcomes": ["booked", "not_booked"],
    "voice": "agent-voice-id",
    "tts_model": "agent-tts-model",
    "stt_model": "agent-stt-model",
    "stt_language": "es",
    "llm_model": "agent-model",
    "max_duration_secs": 300,
    "analysis_fields": [{"name": "booked_day", "type": "string", "description": "The day they booked, if any"}],
}


@pytest.fixture
def server_clock():
    return MovableClock(datetime(2027, 3, 15, 14, 0, tzinfo=UTC))  # Monday 10:00 in New York


async def create_agent(server, name="Check-ups", **profile) -> dict:
    response = await server.post("/agents", {"name": name, "profile": {**PROFILE, **profile}})
    assert response.status_code == 201, response.text
    return response.json()


async def test_every_change_makes_a_version_and_bad_profiles_change_nothing(server):
    agent = await create_agent(server)
    assert (agent["version"], agent["profile"]["outcomes"]) == (1, ["booked", "not_booked"])
    changed = await server.client.patch(f"/agents/{agent['id']}", json={"profile": {"greeting": "Hello {name}!"}},
                                        headers={"X-API-Key": server.settings.secret("dialout_api_key")})
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2 and changed.json()["profile"]["prompt"] == PROFILE["prompt"]
    versions = (await server.get(f"/agents/{agent['id']}/versions")).json()["versions"]
    assert [v["version"] for v in versions] == [2, 1] and versions[1]["profile"]["greeting"] == PROFILE["greeting"]
    assert (await server.get(f"/agents/{agent['id']}/versions/1")).json()["profile"]["greeting"] == PROFILE["greeting"]

    headers = {"X-API-Key": server.settings.secret("dialout_api_key")}
    for profile, field in [({"greeting": "Hi {"}, "greeting"), ({"outcomes": ["not a name"]}, "outcomes"),
                           ({"colour": "blue"}, "colour"), ({"max_duration_secs": 5}, "max_duration_secs")]:
        bad = await server.client.patch(f"/agents/{agent['id']}", json={"profile": profile}, headers=headers)
        assert bad.status_code == 422 and field in str(bad.json()["detail"][0]["loc"]), (profile, bad.text)
    assert (await server.post("/agents", {"name": "x", "profile": {"greting": "typo"}})).status_code == 422
    assert (await server.get(f"/agents/{agent['id']}")).json()["version"] == 2  # nothing changed
    assert (await server.get("/agents/nope")).status_code == 404


async def test_dialout_runs_an_agent_and_the_records_compare_its_versions(vendors, server):
    agent = await create_agent(server)
    vendors.twilio.callee = conversation("yes_this_is_ada", hang_up=True)
    vendors.gemini.summarise = lambda request: {"summary": "Booked.", "outcome": "booked", "analysis": {"booked_day": "Tuesday"}}
    first = await server.dialout({"to_number": CALLEE_NUMBER, "agent_id": agent["id"], "variables": {"name": "Ada"}})
    assert first.status_code == 200, first.text
    record = await server.record(first.json()["call_id"], until=lambda r: r["end_reason"] and r["summary"], timeout=30)

    # The agent's script, voice, model, outcomes and analysis fields ran the call.
    assert vendors.cartesia.bytes_requests[0]["transcript"] == "Hi Ada, this is Acme Clinic calling about your check-up."
    assert vendors.cartesia.bytes_requests[0]["voice"]["id"] == "agent-voice-id"
    assert vendors.cartesia.bytes_requests[0]["model_id"] == "agent-tts-model"
    assert (vendors.deepgram.connections[0]["model"], vendors.deepgram.connections[0]["language"]) == ("agent-stt-model", "es")
    request = vendors.gemini.requests[0]
    assert "The patient is Ada" in str(request["systemInstruction"])
    tools = {d["name"]: d for t in request["tools"] for d in t["functionDeclarations"]}
    assert tools["record_outcome"]["parameters"]["properties"]["outcome"]["enum"] == ["booked", "not_booked"]
    assert any("agent-model" in path for path in vendors.gemini.paths)
    assert (record["agent_id"], record["agent_version"], record["outcome"]) == (agent["id"], 1, "booked")
    assert record["analysis"] == {"booked_day": "Tuesday"} and record["variables"] == {"clinic": "Acme", "name": "Ada"}

    # The call's own fields override the agent's; a new version runs the next call.
    headers = {"X-API-Key": server.settings.secret("dialout_api_key")}
    await server.client.patch(f"/agents/{agent['id']}", json={"profile": {"greeting": "Hello {name}, Acme again."}}, headers=headers)
    second = await server.dialout({"to_number": CALLEE_NUMBER, "agent_id": agent["id"], "variables": {"name": "Bo"}})
    await server.record(second.json()["call_id"], until=lambda r: r["end_reason"] and r["summary"], timeout=30)
    third = await server.dialout({"to_number": CALLEE_NUMBER, "agent_id": agent["id"], "variables": {"name": "Cy"},
                                  "greeting": "Cy, one question."})
    await server.record(third.json()["call_id"], until=lambda r: r["end_reason"] and r["summary"], timeout=30)
    greetings = [r["transcript"] for r in vendors.cartesia.bytes_requests]
    assert greetings[1:] == ["Hello Bo, Acme again.", "Cy, one question."]

    by_version = {v: [c["id"] for c in (await server.get("/calls", agent_id=agent["id"], agent_version=v)).json()["calls"]]
                  for v in (1, 2)}
    assert by_version == {1: [first.json()["call_id"]], 2: [third.json()["call_id"], second.json()["call_id"]]}
    rows = list(csv.DictReader(io.StringIO((await server.get("/calls/export", agent_id=agent["id"])).text)))
    assert sorted(r["agent_version"] for r in rows) == ["1", "2", "2"]

    # The agent's outcomes are what an operator may correct to; an unknown agent is a 422 on its field.
    correction = await server.client.patch(f"/calls/{record['id']}", json={"outcome": "not_booked"}, headers=headers)
    assert correction.status_code == 200, correction.text
    unknown = await server.dialout({"to_number": CALLEE_NUMBER, "agent_id": "nope"})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "agent_id"]

    # The console compares the versions' results.
    from tests.test_console import signed_in

    async with signed_in(server) as (client, _):
        page = (await client.get(f"/console/agents/{agent['id']}")).text
    assert '<span class="tag">booked 2</span>' in page and '<span class="tag">not_booked 1</span>' in page


async def test_a_campaign_dials_with_its_agents_current_version_and_keeps_it_from_deletion(vendors, server):
    agent = await create_agent(server)
    vendors.twilio.callee = conversation("yes_this_is_ada", hang_up=True)
    # The agent's templates need a {name} column: a file without one is refused before any row is stored.
    other = (await server.post("/campaigns", {"name": "other", "settings": {"timezone": "UTC", "agent_id": agent["id"]}})).json()
    refused = await server.post(f"/campaigns/{other['id']}/contacts", content=b"phone\n+12125550102\n",
                                headers={"Content-Type": "text/csv"})
    assert refused.status_code in (400, 422) and "{name}" in refused.text, refused.text
    campaign_id = await new_campaign(server, "phone,name\n+12125550101,Ada\n", agent_id=agent["id"],
                                     calling_windows=ALL_DAY, allow_outside_legal_hours=True)
    await server.post(f"/campaigns/{campaign_id}/start")
    refused = await server.client.delete(f"/agents/{agent['id']}", headers={"X-API-Key": server.settings.secret("dialout_api_key")})
    assert refused.status_code == 409 and "test campaign" in refused.json()["detail"]

    calls = await wait_for(lambda: _campaign_calls(server, campaign_id), 20)
    record = await server.record(calls[0]["id"], until=lambda r: r["end_reason"], timeout=30)
    assert (record["agent_id"], record["agent_version"]) == (agent["id"], 1)
    assert vendors.cartesia.bytes_requests[0]["transcript"] == "Hi Ada, this is Acme Clinic calling about your check-up."
    assert (await contacts(server, campaign_id))["+12125550101"]["state"] == "done"


async def _campaign_calls(server, campaign_id: str) -> list[dict]:
    return (await server.get("/calls", campaign_id=campaign_id)).json()["calls"]


async def test_operators_create_and_edit_agents_in_the_console(server):
    from tests.test_console import HOSTILE, signed_in

    async with signed_in(server) as (client, csrf):
        headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
        bad = await client.post("/console/agents", json={"name": "x", "profile": {"greeting": "Hi {"}}, headers=headers)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:3] == ["body", "profile", "greeting"]
        assert (await client.post("/console/agents", json={"name": "x"}, headers={"Accept": "application/json"})).status_code == 403
        created = await client.post("/console/agents", json={"name": HOSTILE, "profile": PROFILE}, headers=headers)
        assert created.status_code == 201, created.text
        agent_id = created.json()["id"]
        listing = (await client.get("/console/agents")).text
        assert "&lt;script&gt;" in listing and HOSTILE not in listing

        # The page sends the whole profile: what it leaves out returns to the server's setting.
        edited = {k: v for k, v in PROFILE.items() if k != "voice"}
        saved = await client.post(f"/console/agents/{agent_id}", json={"name": "Check-ups", "profile": edited}, headers=headers)
        assert saved.status_code == 200, saved.text
        agent = (await server.get(f"/agents/{agent_id}")).json()
        assert agent["version"] == 2 and agent["name"] == "Check-ups" and agent["profile"]["voice"] is None
        page = (await client.get(f"/console/agents/{agent_id}")).text
        assert "version 2" in page and "No calls yet." in page


async def test_the_command_line_manages_agents(tmp_path):
    import asyncio
    import json
    import sys
    from pathlib import Path

    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db", "PATH": "/usr/bin:/bin"}

    async def cli(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "outcall", "agent", *args, cwd=Path(__file__).parent.parent, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        return process.returncode, out.decode(), err.decode()

    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(PROFILE))
    code, out, err = await cli("create", "Check-ups", "--profile", str(profile))
    assert code == 0, err
    agent_id = out.strip()
    profile.write_text(json.dumps({"greeting": "Hello {name}."}))
    code, out, err = await cli("update", agent_id, "--profile", str(profile))
    assert (code, out.strip()) == (0, "Check-ups: version 2"), err
    code, out, _ = await cli("show", agent_id)
    shown = json.loads(out)
    assert shown["profile"]["greeting"] == "Hello {name}." and shown["profile"]["voice"] == "agent-voice-id"
    profile.write_text(json.dumps({"outcomes": ["not a name"]}))
    code, _, err = await cli("update", agent_id, "--profile", str(profile))
    assert code == 2 and "outcomes" in err
    code, out, _ = await cli("list")
    assert f"{agent_id}  Check-ups  version 2" in out
    assert (await cli("delete", agent_id))[0] == 0 and (await cli("show", agent_id))[0] == 2


async def test_an_agent_can_run_on_its_own_openai_compatible_llm(vendors, server):
    from tests.conftest import polite_llm
    from tests.fakes.openai import FakeOpenAI

    local_llm = await FakeOpenAI("not-needed", polite_llm).start()  # a self-hosted server: no key
    try:
        agent = await create_agent(server, llm_provider="openai", llm_base_url=local_llm.base_url, llm_model="local-llama")
        vendors.twilio.callee = conversation("yes_this_is_ada", hang_up=True)
        response = await server.dialout({"to_number": CALLEE_NUMBER, "agent_id": agent["id"], "variables": {"name": "Ada"}})
        record = await server.record(response.json()["call_id"], until=lambda r: r["end_reason"] and r["summary"], timeout=30)
    finally:
        await local_llm.stop()
    assert local_llm.requests and local_llm.requests[0]["model"] == "local-llama"
    assert local_llm.summary_requests and vendors.gemini.requests == []  # the server's default LLM was not asked
    assert record["agent_version"] == 1
    bad = await server.post("/agents", {"name": "x", "profile": {"llm_base_url": "ftp://x"}})
    assert bad.status_code == 422


async def test_a_campaign_whose_agent_is_gone_pauses_and_says_why(vendors, server):
    agent = await create_agent(server, greeting="Hello, this is Acme Clinic.", prompt="You book check-ups.")
    campaign_id = await new_campaign(server, "phone\n+12125550101\n", agent_id=agent["id"],
                                     calling_windows=ALL_DAY, allow_outside_legal_hours=True)
    headers = {"X-API-Key": server.settings.secret("dialout_api_key")}
    assert (await server.client.delete(f"/agents/{agent['id']}", headers=headers)).status_code == 204  # a draft may lose it
    await server.post(f"/campaigns/{campaign_id}/start")
    view = await wait_for(lambda: _paused(server, campaign_id), 10)
    assert agent["id"] in view["status_reason"] and "no longer exists" in view["status_reason"]
    assert vendors.twilio.calls == {}  # nobody was dialed


async def _paused(server, campaign_id: str) -> dict | None:
    view = (await server.get(f"/campaigns/{campaign_id}")).json()
    return view if view["status"] == "paused" else None
