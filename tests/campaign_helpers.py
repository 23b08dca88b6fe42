"""Shared steps of the campaign tests: create a campaign over the API, import, wait."""

import asyncio
import inspect

from outcall.calling_windows import WEEKDAYS

ALL_DAY = {day: [{"start": "00:00", "end": "23:59"}] for day in WEEKDAYS}


async def new_campaign(server, csv_text: str, **settings) -> str:
    """A campaign (America/New_York unless said) with the CSV's contacts imported; returns its id."""
    response = await server.post("/campaigns", {"name": "test campaign", "settings": {"timezone": "America/New_York", **settings}})
    assert response.status_code == 201, response.text
    campaign_id = response.json()["id"]
    response = await server.post(
        f"/campaigns/{campaign_id}/contacts", content=csv_text.encode(), headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == 0, response.json()
    return campaign_id


async def campaign(server, campaign_id: str) -> dict:
    response = await server.get(f"/campaigns/{campaign_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def contacts(server, campaign_id: str) -> dict[str, dict]:
    response = await server.get(f"/campaigns/{campaign_id}/contacts", limit=1000)
    return {c["phone"]: c for c in response.json()["contacts"]}


async def wait_for(condition, timeout: float = 20, what: str = "condition"):
    """Poll `condition` (sync or async) until it returns something truthy, and return that."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def dials_to(vendors, number: str) -> int:
    return sum(1 for call in vendors.twilio.calls.values() if call.to == number)
