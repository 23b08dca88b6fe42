"""The console in a real headless Chromium (Debian's package, driven by Playwright): an operator
runs a campaign from start to finish, and text from callees and CSV files never runs as script.

Without Chromium these tests skip, except where OUTCALL_REQUIRE_BROWSER=1 (`.ci/run` sets it),
where they fail. OUTCALL_SCREENSHOTS=<dir> saves the screens the README shows.
"""

import asyncio
import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.campaign_helpers import ALL_DAY
from tests.conftest import API_KEY, speech
from tests.test_console import HOSTILE, finished_call

CHROMIUM = os.environ.get("OUTCALL_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("OUTCALL_SCREENSHOTS")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]


def require_chromium() -> None:
    """Skip the test without Chromium (fail it where OUTCALL_REQUIRE_BROWSER=1, as in CI)."""
    if not shutil.which(CHROMIUM):
        message = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("OUTCALL_REQUIRE_BROWSER") == "1":
            pytest.fail(message + "; OUTCALL_REQUIRE_BROWSER=1 makes the browser tests mandatory")
        pytest.skip(message)


@contextlib.asynccontextmanager
async def chromium(*extra_args: str):
    """Debian's Chromium under Playwright."""
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, *extra_args], timeout=30_000)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def browser():
    async with chromium() as browser:
        yield browser


@contextlib.asynccontextmanager
async def signed_in_tab(browser, server, **context_options):
    """A signed-in operator's tab; fails the test on any script error or dialog it did not expect."""
    context = await browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900}, **context_options)
    context.set_default_timeout(15_000)
    tab = await context.new_page()
    tab.errors = []
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    tab.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await tab.goto("/console")
    assert tab.url.endswith("/console/sign-in")
    await tab.get_by_label("Key or password").fill(API_KEY)
    await tab.get_by_role("button", name="Sign in").click()
    await tab.wait_for_url("**/console")
    yield tab
    assert tab.errors == []
    await context.close()


@pytest.fixture
async def page(browser, server):
    async with signed_in_tab(browser, server) as tab:
        yield tab


async def screenshot(tab, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        await tab.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def a_conversation(linger: float):
    """A callee who answers, talks, hears the reply, stays on the line `linger` seconds, hangs up."""
    async def callee(call):
        await call.wait_for_bot_to_speak()
        await call.say(speech("yes_this_is_ada"))
        await call.wait_for_bot_to_speak()
        await asyncio.sleep(linger)
        await call.say(speech("yes_this_is_ada"))
        await call.wait_for_bot_to_speak()
        await call.hang_up()

    return callee


async def test_an_operator_runs_a_campaign_from_start_to_finish(vendors, server, page):
    vendors.twilio.callee = a_conversation(linger=2)
    vendors.deepgram.transcripts = ["yes this is ada", "tell me more about it"]

    # Create the campaign; the API's validation error shows next to its field.
    await page.get_by_role("link", name="Campaigns").click()
    form = page.locator("[data-campaign-form]")
    await form.get_by_label("Name").fill("Spring check-ups")
    await form.get_by_label("Time zone").fill("America/New_York")
    await form.get_by_label("Greeting").fill("Hi {first_name}, this is Acme Clinic.")
    await form.get_by_label("Transfer number").fill("555")
    await form.get_by_label("Calling windows").fill(json.dumps(ALL_DAY))
    await form.get_by_label("Allow windows outside").check()
    await form.get_by_label("Concurrent calls").fill("1")
    await form.get_by_role("button", name="Create campaign").click()
    error = form.locator('[data-error-for="transfer_number"]')
    await error.filter(has_text="E.164").wait_for()
    assert (await server.get("/campaigns")).json()["campaigns"] == []
    await form.get_by_label("Transfer number").fill("")
    await form.get_by_role("button", name="Create campaign").click()
    await page.wait_for_url("**/console/campaigns/*")
    await page.locator("h1").filter(has_text="Spring check-ups").wait_for()

    # Upload contacts, one row bad: it is reported, the others kept.
    contacts = b"phone,first_name\n+12125550101,Ada\nnot-a-number,Bob\n+12125550102,Cy\n"
    await page.locator("[data-file]").set_input_files({"name": "contacts.csv", "mimeType": "text/csv", "buffer": contacts})
    await page.get_by_role("button", name="Upload").click()
    await page.locator("[data-upload-summary]").filter(has_text="Imported 2 contacts; rejected 1 rows").wait_for()
    bad_row = page.locator("[data-upload-errors] tbody tr")
    assert await bad_row.count() == 1 and "not-a-number" in await bad_row.inner_text()
    assert await page.locator("[data-upload-errors-csv]").is_visible()
    await page.reload()
    await page.locator("table.contacts tbody tr").nth(1).wait_for()

    # Start it, and watch the first call live on the overview.
    await page.get_by_role("button", name="Start").click()
    await page.locator('[data-field="campaign-status"]').filter(has_text="running").wait_for()
    await page.get_by_role("link", name="Overview").click()
    live_row = page.locator("#live-calls tbody tr")
    await live_row.first.wait_for()
    await page.locator('#live-calls [data-field="status"]').filter(has_text="in-progress").wait_for()
    await page.locator("[data-running-campaigns] progress").wait_for()
    await screenshot(page, "overview")

    # The call's page: its transcript grows without a reload.
    await live_row.first.get_by_role("link", name="+1212").click()
    await page.wait_for_url("**/console/calls/*")
    turns = page.locator(".transcript .turn")
    before = await turns.count()
    await page.wait_for_function(
        "count => document.querySelectorAll('.transcript .turn').length > count", arg=before, timeout=20_000
    )
    assert int(await page.locator("[data-live-call]").get_attribute("data-updates")) >= 1
    await page.locator('[data-field="status"]').filter(has_text="completed").wait_for(timeout=30_000)
    await page.locator(".transcript .turn.callee").filter(has_text="yes this is ada").first.wait_for()
    await screenshot(page, "call")

    # Pause the campaign from its page.
    campaign_id = (await server.get("/campaigns")).json()["campaigns"][0]["id"]
    await page.goto(f"/console/campaigns/{campaign_id}")
    await page.get_by_role("button", name="Pause").click()
    await page.locator('[data-field="campaign-status"]').filter(has_text="paused").wait_for()
    assert (await server.get(f"/campaigns/{campaign_id}")).json()["status"] == "paused"
    await screenshot(page, "campaign")

    # Correct the first call's outcome.
    call = (await server.get("/calls", campaign_id=campaign_id)).json()["calls"][-1]
    await page.goto(f"/console/calls/{call['id']}")
    await page.get_by_label("Correct the outcome").select_option("callback_requested")
    await page.get_by_label("Notes").fill("call back after 5pm")
    await page.get_by_role("button", name="Save outcome").click()
    await page.locator(".corrections").filter(has_text="callback_requested").wait_for()
    record = (await server.get(f"/calls/{call['id']}")).json()
    assert (record["outcome"], record["outcome_notes"]) == ("callback_requested", "call back after 5pm")
    assert record["outcome_corrections"][0]["by"].startswith("console:")

    # Export what the campaign did.
    await page.goto(f"/console/campaigns/{campaign_id}")
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Export them as CSV").click()
    exported = Path(await (await download_info.value).path()).read_text()
    assert call["id"] in exported and "callback_requested" in exported
    await page.goto("/console/calls")
    await screenshot(page, "calls")


async def test_callee_speech_and_csv_text_never_run_as_script(vendors, server, page):
    record = await finished_call(vendors, server, f"hello {HOSTILE}", variables={"name": HOSTILE})
    campaign = await server.post("/campaigns", {"name": f"Spring {HOSTILE}", "settings": {"timezone": "UTC"}})
    csv_text = f'phone,first_name\n+12125550101,"{HOSTILE.replace(chr(34), chr(34) * 2)}"\n'
    await server.post(f"/campaigns/{campaign.json()['id']}/contacts", content=csv_text.encode(), headers={"Content-Type": "text/csv"})

    for path in (f"/console/calls/{record['id']}", "/console/calls", "/console/campaigns", f"/console/campaigns/{campaign.json()['id']}"):
        await page.goto(path)
        await page.wait_for_load_state("networkidle")
        assert await page.evaluate("window.pwned") is None, path
    await page.goto(f"/console/calls/{record['id']}")
    assert HOSTILE in await page.locator(".transcript").inner_text()  # shown as text

    # Text that arrives live, through the event stream, is as inert.
    await page.goto("/console")
    vendors.twilio.callee = a_conversation(linger=3)
    vendors.deepgram.transcripts = [HOSTILE, HOSTILE]
    await server.dialout({"to_number": "+12125550199", "variables": {"name": HOSTILE}})
    await page.locator("#live-calls .transcript-line").filter(has_text="window.pwned").first.wait_for(timeout=20_000)
    assert await page.evaluate("window.pwned") is None
