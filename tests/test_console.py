"""The operator console over HTTP, through the real app and the Twilio emulator: sign-in, the
session cookie's limits, CSRF, escaping of everything callees and CSV files say, the export,
outcome corrections, the proxied recording and the live event stream."""

import asyncio
import contextlib
import csv
import io
import json
import re
import wave
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import API_KEY, CALLEE_NUMBER, conversation
from tests.campaign_helpers import wait_for

HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


@contextlib.asynccontextmanager
async def signed_in(server) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A browser-like client signed in to the console, and its page's CSRF token."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers={"Accept": "text/html"}) as client:
        response = await client.post("/console/sign-in", data={"password": API_KEY}, headers={"Origin": server.url})
        assert response.status_code == 303, response.text
        page = await client.get("/console")
        assert page.status_code == 200
        yield client, re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text).group(1)


async def finished_call(vendors, server, said: str, **dialout) -> dict:
    """A whole call through the emulator in which the callee says `said`; its final record."""
    vendors.twilio.callee = conversation("yes_this_is_ada", hang_up=True)
    vendors.deepgram.transcripts = [said]
    response = await server.dialout({"to_number": CALLEE_NUMBER, **dialout})
    assert response.status_code == 200, response.text
    return await server.record(response.json()["call_id"], until=lambda r: r["end_reason"] and r["summary"])


@pytest.mark.parametrize("server_overrides", [{"dialout_api_key": None}])
async def test_without_a_key_the_console_says_how_to_configure_one_and_nothing_else(server):
    async with httpx.AsyncClient(base_url=server.url) as client:
        for path in ("/console", "/console/sign-in"):
            response = await client.get(path, headers={"Accept": "text/html"})
            assert response.status_code == 503
            assert "DIALOUT_API_KEY" in response.text and "DASHBOARD_PASSWORD" in response.text
            assert "Calls" not in response.text and "Overview" not in response.text
        assert (await client.post("/console/sign-in", data={"password": ""})).status_code == 503
        assert (await client.get("/")).headers["location"] == "/console"


async def test_sign_in_sets_a_strict_session_cookie_the_api_does_not_accept(server):
    async with httpx.AsyncClient(base_url=server.url, headers={"Accept": "text/html"}) as client:
        assert (await client.get("/console/calls")).headers["location"] == "/console/sign-in"
        wrong = await client.post("/console/sign-in", data={"password": "guess"}, headers={"Origin": server.url})
        assert wrong.status_code == 401 and "not the key" in wrong.text
        cross_site = await client.post("/console/sign-in", data={"password": API_KEY}, headers={"Origin": "https://evil.example"})
        assert cross_site.status_code == 403 and "outcall_console" not in cross_site.headers.get("set-cookie", "")

        response = await client.post("/console/sign-in", data={"password": API_KEY}, headers={"Origin": server.url})
        assert response.status_code == 303
        cookie = response.headers["set-cookie"]
        assert "outcall_console=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Max-Age=43200" in cookie and API_KEY not in cookie and "Secure" not in cookie  # plain http here
        page = await client.get("/console/calls")
        assert page.status_code == 200 and API_KEY not in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"

        # The cookie is the console's alone: the API still wants the key.
        assert (await client.get("/calls")).status_code == 401
        assert (await client.get("/console/calls/export.csv")).status_code == 200

        forged = client.cookies.get("outcall_console")[:-4] + "AAAA"
        client.cookies.set("outcall_console", forged)
        assert (await client.get("/console/calls")).headers["location"] == "/console/sign-in"


async def test_repeated_failed_sign_ins_are_slowed_down(server):
    async with httpx.AsyncClient(base_url=server.url, headers={"Origin": server.url}) as client:
        statuses = [(await client.post("/console/sign-in", data={"password": f"guess{i}"})).status_code for i in range(4)]
        assert statuses == [401, 401, 401, 429]
        # Even the right key waits its turn.
        waiting = await client.post("/console/sign-in", data={"password": API_KEY})
        assert waiting.status_code == 429 and "wait" in waiting.text


async def test_every_change_needs_the_pages_csrf_token_and_origin(server):
    async with signed_in(server) as (client, token):
        add = {"phone": "+14155552671", "reason": "asked"}
        assert (await client.post("/console/do-not-call", data=add)).status_code == 403
        assert (await client.post("/console/do-not-call", data={**add, "csrf_token": "wrong"})).status_code == 403
        evil = await client.post("/console/do-not-call", data={**add, "csrf_token": token}, headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403 and "CSRF" in evil.text
        assert (await server.get("/do-not-call/+14155552671")).status_code == 404  # nothing changed

        done = await client.post("/console/do-not-call", data={**add, "csrf_token": token}, headers={"Origin": server.url})
        assert done.status_code == 303
        entry = (await server.get("/do-not-call/+14155552671")).json()
        assert (entry["source"], entry["reason"]) == ("console", "asked")
        bad = await client.post("/console/do-not-call", data={"phone": "12", "csrf_token": token}, headers={"Origin": server.url})
        assert bad.status_code == 422 and "country code" in bad.text

        # Scripts send the token as a header; the JSON endpoints refuse without it.
        created = await client.post("/console/campaigns", json={"name": "x", "settings": {"timezone": "UTC"}})
        assert created.status_code == 403
        assert (await server.get("/campaigns")).json()["campaigns"] == []

        signed_out = await client.post("/console/sign-out", data={"csrf_token": token}, headers={"Origin": server.url})
        assert signed_out.status_code == 303 and 'outcall_console=""' in signed_out.headers["set-cookie"]


async def test_callee_speech_and_csv_text_are_escaped_everywhere(vendors, server):
    record = await finished_call(vendors, server, f"hello {HOSTILE}", variables={"name": HOSTILE}, metadata={"note": HOSTILE})
    assert any(HOSTILE in turn["text"] for turn in record["transcript"])
    campaign = await server.post("/campaigns", {"name": f"Spring {HOSTILE}", "settings": {"timezone": "UTC"}})
    campaign_id = campaign.json()["id"]
    contacts = f'phone,first_name\n+12125550101,"{HOSTILE.replace(chr(34), chr(34) * 2)}"\n'
    imported = await server.post(f"/campaigns/{campaign_id}/contacts", content=contacts.encode(), headers={"Content-Type": "text/csv"})
    assert imported.json()["imported"] == 1

    async with signed_in(server) as (client, _):
        for path in (f"/console/calls/{record['id']}", "/console/calls", "/console/campaigns", f"/console/campaigns/{campaign_id}", "/console"):
            page = (await client.get(path)).text
            assert "<script>window" not in page and "<img src=x" not in page, path
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in (await client.get(f"/console/calls/{record['id']}")).text
        assert "&lt;img src=x onerror=" in (await client.get(f"/console/campaigns/{campaign_id}")).text


async def test_outcome_corrections_are_kept_with_who_and_when_and_win_over_the_bot(vendors, server):
    record = await finished_call(vendors, server, "yes this is ada")
    call_id = record["id"]
    assert (await server.client.patch(f"/calls/{call_id}", json={"outcome": "interested"})).status_code == 401
    unknown = await server.client.patch(f"/calls/{call_id}", json={"outcome": "delighted"}, headers={"X-API-Key": API_KEY})
    assert unknown.status_code == 422 and "one of" in unknown.text
    assert (await server.client.patch("/calls/nope", json={"outcome": "other"}, headers={"X-API-Key": API_KEY})).status_code == 404

    corrected = await server.client.patch(
        f"/calls/{call_id}", json={"outcome": "interested", "notes": "wants the brochure"}, headers={"X-API-Key": API_KEY}
    )
    assert corrected.status_code == 200
    assert (corrected.json()["outcome"], corrected.json()["outcome_notes"]) == ("interested", "wants the brochure")
    [first] = corrected.json()["outcome_corrections"]
    assert (first["previous"], first["outcome"], first["by"]) == (record["outcome"], "interested", "api")

    # Through the console: do_not_call lists the number, as the bot's outcome would.
    async with signed_in(server) as (client, token):
        response = await client.post(
            f"/console/calls/{call_id}/outcome", data={"outcome": "do_not_call", "notes": "", "csrf_token": token},
            headers={"Origin": server.url},
        )
        assert response.status_code == 303
        page = (await client.get(f"/console/calls/{call_id}")).text
        assert "interested → <strong>do_not_call</strong> by console:" in page
    final = await server.record(call_id)
    assert final["outcome"] == "do_not_call" and len(final["outcome_corrections"]) == 2
    assert (await server.get(f"/do-not-call/{CALLEE_NUMBER}")).json()["source"] == "outcome"


async def test_calls_filter_by_campaign_and_number_and_export_as_csv(vendors, server):
    record = await finished_call(vendors, server, "=HYPERLINK(\"http://evil.example\") hello", metadata={"crm": "7"})
    by_number = await server.get("/calls", number=CALLEE_NUMBER)
    assert [c["id"] for c in by_number.json()["calls"]] == [record["id"]]
    assert (await server.get("/calls", number="+12125550101")).json()["calls"] == []
    assert (await server.get("/calls", campaign_id="none")).json()["calls"] == []
    assert (await server.get("/calls", number="12")).status_code == 422

    export = await server.get("/calls/export", number=CALLEE_NUMBER)
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [r["id"] for r in rows] == [record["id"]]
    assert rows[0]["to_number"] == CALLEE_NUMBER and json.loads(rows[0]["metadata"]) == {"crm": "7"}
    assert rows[0]["transcript"].startswith("callee: =HYPERLINK") is False  # the first turn is the bot's greeting
    assert "\ncallee: =HYPERLINK" in rows[0]["transcript"]
    assert all(not value.startswith(("=", "@")) for value in rows[0].values())

    async with signed_in(server) as (client, _):
        page = (await client.get("/console/calls", params={"number": CALLEE_NUMBER})).text
        assert record["id"] in page and f"number=%2B{CALLEE_NUMBER[1:]}" in page  # the export link keeps the filter
        assert record["id"] not in (await client.get("/console/calls", params={"status": "busy"})).text
        exported = await client.get("/console/calls/export.csv", params={"number": CALLEE_NUMBER})
        assert exported.text == export.text

    figures = (await server.get("/calls/figures")).json()
    assert figures["placed"] == 1 and figures["answered"] == 1 and figures["pickup_rate"] == 1.0


@pytest.mark.parametrize("server_overrides", [{"recording": True}])
async def test_the_recording_plays_through_the_server_with_its_own_credentials(vendors, server):
    record = await finished_call(vendors, server, "yes this is ada")
    record = await server.record(record["id"], until=lambda r: r["recording_url"])
    async with signed_in(server) as (client, _):
        page = (await client.get(f"/console/calls/{record['id']}")).text
        assert record["recording_url"] not in page and "Accounts/AC" not in page
        audio = await client.get(f"/console/calls/{record['id']}/recording")
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(audio.content)) as wav:
            assert (wav.getnchannels(), wav.getframerate()) == (2, 8000) and wav.getnframes() > 8000
    async with httpx.AsyncClient(base_url=server.url) as stranger:
        assert (await stranger.get(f"/console/calls/{record['id']}/recording")).status_code == 401


async def test_live_events_carry_each_change_of_a_call_from_the_database(vendors, server):
    seen: list[dict] = []

    async def read_events():
        async with client.stream("GET", "/console/events", headers={"Accept": "text/event-stream"}) as response:
            assert response.status_code == 200
            event = None
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "call":
                    seen.append(json.loads(line[6:]))

    async with signed_in(server) as (client, _):
        reader = asyncio.create_task(read_events())
        await asyncio.sleep(0.3)
        record = await finished_call(vendors, server, "yes this is ada")
        await wait_for(lambda: any(e["id"] == record["id"] and e["final"] for e in seen), what="the call's end as an event")
        # Polled once a second, so quick steps may arrive together: the call live, then ended.
        statuses = [e["status"] for e in seen if e["id"] == record["id"]]
        assert statuses[-1] == "completed" and len(statuses) >= 2 and statuses[0] != "completed"
        assert any(e["last_line"] for e in seen if e["id"] == record["id"])
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

        # A page that reconnects with Last-Event-ID gets what it missed.
        async with client.stream("GET", "/console/events", params={"call_id": record["id"]},
                                 headers={"Last-Event-ID": "2000-01-01T00:00:00+00:00"}) as response:
            lines = []
            async for line in response.aiter_lines():
                lines.append(line)
                if line.startswith("data: "):
                    break
        detail = json.loads(lines[-1][6:])
        assert detail["id"] == record["id"] and detail["transcript"] == record["transcript"]


async def test_an_operator_hangs_up_a_live_call_from_the_console(vendors, server):
    async def patient_callee(call):
        await call.wait_for_bot_to_speak()
        await asyncio.sleep(30)  # would stay on the line; the operator hangs up first

    vendors.twilio.callee = patient_callee
    response = await server.dialout({"to_number": CALLEE_NUMBER})
    call_id = response.json()["call_id"]
    call = vendors.twilio.calls[response.json()["call_sid"]]
    await wait_for(lambda: call.stream_started_at, what="the call to be answered")
    async with signed_in(server) as (client, token):
        overview = (await client.get("/console")).text
        assert f'action="/console/calls/{call_id}/hangup"' in overview
        hung_up = await client.post(f"/console/calls/{call_id}/hangup", data={"csrf_token": token}, headers={"Origin": server.url})
        assert hung_up.status_code == 303
        await asyncio.wait_for(call.ended.wait(), 10)
        await server.record(call_id, until=lambda r: r["status"] == "completed")
        again = await client.post(f"/console/calls/{call_id}/hangup", data={"csrf_token": token}, headers={"Origin": server.url})
        assert again.status_code == 409 and "already ended" in again.text and "<html" in again.text  # a page, not JSON
    assert (await server.record(call_id))["end_reason"] == "api-hangup"


@pytest.mark.parametrize("server_overrides", [{"server_url": "https://console.example.com"}])
async def test_behind_a_tls_proxy_the_public_origin_is_this_servers_own(server):
    local = f"http://127.0.0.1:{server.settings.port}"
    async with httpx.AsyncClient(base_url=local, headers={"Accept": "text/html"}) as client:
        public = await client.post("/console/sign-in", data={"password": API_KEY},
                                   headers={"Origin": "https://console.example.com", "Host": "console.example.com"})
        assert public.status_code == 303 and "Secure" in public.headers["set-cookie"]
        direct = await client.post("/console/sign-in", data={"password": API_KEY}, headers={"Origin": local})
        assert direct.status_code == 303 and "Secure" not in direct.headers["set-cookie"]
        lookalike = await client.post("/console/sign-in", data={"password": API_KEY}, headers={"Origin": "https://console.example.com.evil.example"})
        assert lookalike.status_code == 403


async def test_campaign_edits_deletion_the_do_not_call_list_and_settings_from_the_console(server):
    campaign_id = (await server.post("/campaigns", {"name": "Spring", "settings": {"timezone": "UTC"}})).json()["id"]
    async with signed_in(server) as (client, token):
        change = {"X-CSRF-Token": token, "Origin": server.url}
        bad = await client.post(f"/console/campaigns/{campaign_id}/settings", json={"settings": {"greeting": "Hi {"}}, headers=change)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "settings", "greeting"]
        good = await client.post(f"/console/campaigns/{campaign_id}/settings",
                                 json={"name": "Spring 2027", "settings": {"greeting": "Hi {first_name}", "daily_cap": 50}}, headers=change)
        assert good.status_code == 200 and good.json()["location"] == f"/console/campaigns/{campaign_id}"
        stored = (await server.get(f"/campaigns/{campaign_id}")).json()
        assert (stored["name"], stored["settings"]["greeting"], stored["settings"]["daily_cap"]) == ("Spring 2027", "Hi {first_name}", 50)

        form = {"csrf_token": token}
        assert (await client.post(f"/console/campaigns/{campaign_id}/delete", data=form, headers={"Origin": server.url})).status_code == 303
        assert (await server.get(f"/campaigns/{campaign_id}")).status_code == 404

        national = await client.post("/console/do-not-call", data={"phone": "(212) 555-0101", "csrf_token": token},
                                     headers={"Origin": server.url})
        assert national.status_code == 422 and "country code" in national.text
        assert "is not on the list" in (await client.get("/console/do-not-call", params={"phone": "+12125550102"})).text
        await client.post("/console/do-not-call", data={"phone": "+12125550101", "csrf_token": token}, headers={"Origin": server.url})
        found = (await client.get("/console/do-not-call", params={"phone": "+1 212 555 0101"})).text
        assert "+12125550101 is on the list (console)" in found
        removed = await client.post("/console/do-not-call/remove", data={"phone": "+12125550101", "csrf_token": token},
                                    headers={"Origin": server.url})
        assert removed.status_code == 303 and (await server.get("/do-not-call/+12125550101")).status_code == 404

        settings_page = (await client.get("/console/settings")).text
        assert "Everything calls need is configured" in settings_page and API_KEY not in settings_page
        assert "twilio-test-auth-token" not in settings_page and "test-stream-secret" not in settings_page
