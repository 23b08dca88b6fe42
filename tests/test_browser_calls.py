"""Test calls from the console (outcall/browser_calls.py), below the browser: who may create one,
who may open its stream, what a bad token reaches (nothing), and how its record begins and ends.

A small Python line stands in for the page here, speaking Twilio's Media Streams protocol as
the page does; the page itself is tested in a real Chromium in test_test_phone_browser.py.
"""

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import websockets

from outcall.stream_auth import issue_stream_token
from tests.campaign_helpers import wait_for
from tests.conftest import API_KEY, CALLEE_NUMBER, MovableClock, speech
from tests.fakes.audio import FRAME_BYTES, ULAW_SILENCE, frames, rms, ulaw_to_pcm
from tests.fakes.twilio import VOICED_RMS
from tests.test_console import signed_in
from tests.test_stream_security import open_stream, place_held_call, vendor_connections


def socket_url(server) -> str:
    return server.url.replace("http", "ws") + "/ws"


def console_headers(client, origin: str) -> dict:
    return {"Cookie": f"outcall_console={client.cookies['outcall_console']}", "Origin": origin}


async def create_test_call(client, csrf: str, body: dict | None = None):
    return await client.post("/console/test-calls", json=body or {}, headers={"X-CSRF-Token": csrf, "Accept": "application/json"})


class BrowserLine:
    """Twilio's side of the stream as the test phone page plays it: `connected`, `start`, a
    `media` frame every 20 ms (the callee's speech, else silence), `dtmf`, `stop`."""

    def __init__(self, ws, start: dict):
        self.ws = ws
        self.start = start
        self.speech: list[bytes] = []
        self.voiced_frames_heard = 0
        self.clears = 0
        self.closed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    @classmethod
    async def open(cls, server, client, start: dict, origin: str | None = None) -> "BrowserLine":
        ws = await websockets.connect(socket_url(server), additional_headers=console_headers(client, origin or server.url))
        line = cls(ws, start)
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await line.send({"event": "start", "start": {
            "accountSid": start["account_sid"], "streamSid": start["stream_sid"], "callSid": start["call_sid"],
            "tracks": ["inbound"], "customParameters": start["custom_parameters"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }})
        line._tasks = [asyncio.create_task(line._send_media()), asyncio.create_task(line._receive())]
        return line

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps({"streamSid": self.start["stream_sid"], **message}))

    def say(self, ulaw: bytes) -> None:
        self.speech.extend(frames(ulaw))

    async def hear_bot(self, frames_at_least: int, timeout: float = 10) -> None:
        await wait_for(lambda: self.voiced_frames_heard >= frames_at_least, timeout)

    async def hang_up(self) -> None:
        await self.send({"event": "stop", "stop": {"accountSid": self.start["account_sid"], "callSid": self.start["call_sid"]}})
        await self.close()

    async def close(self) -> None:
        await self.ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send_media(self) -> None:
        chunk, begun = 0, time.monotonic()
        while True:
            payload = self.speech.pop(0) if self.speech else ULAW_SILENCE
            chunk += 1
            try:
                await self.send({"event": "media", "media": {
                    "track": "inbound", "chunk": str(chunk), "timestamp": str((chunk - 1) * 20),
                    "payload": base64.b64encode(payload).decode()}})
            except websockets.ConnectionClosed:
                return
            await asyncio.sleep(max(0.0, begun + chunk * 0.02 - time.monotonic()))

    async def _receive(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                if message["event"] == "media":
                    audio = base64.b64decode(message["media"]["payload"])
                    for i in range(0, len(audio), FRAME_BYTES):
                        self.voiced_frames_heard += rms(ulaw_to_pcm(audio[i : i + FRAME_BYTES])) > VOICED_RMS
                elif message["event"] == "clear":
                    self.clears += 1
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()


async def test_test_calls_need_a_signed_in_operator_and_the_csrf_token(server):
    assert (await server.post("/console/test-calls", {})).status_code == 401  # the API key is not a session
    async with signed_in(server) as (client, csrf):
        without_token = await client.post("/console/test-calls", json={}, headers={"Accept": "application/json"})
        assert without_token.status_code == 403 and "CSRF" in without_token.text
        cross_site = await client.post("/console/test-calls", json={}, headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
        assert cross_site.status_code == 403
    assert (await server.get("/calls")).json()["calls"] == []


BAD_SCRIPTS = [
    ({"greeting": "Hi {first_name}"}, "greeting", "first_name"),
    ({"prompt": "Hello {", "variables": {}}, "prompt", "{"),
    ({"variables": {"first name": "Ada"}}, "variables", "identifiers"),
    ({"transfer_number": "555"}, "transfer_number", "E.164"),
    ({"colour": "blue"}, "colour", "Extra inputs"),
]


@pytest.mark.parametrize(("script", "field", "words"), BAD_SCRIPTS)
async def test_a_test_call_refuses_what_dialout_refuses_and_creates_nothing(server, script, field, words):
    dialout = await server.dialout({"to_number": CALLEE_NUMBER, **script})
    async with signed_in(server) as (client, csrf):
        response = await create_test_call(client, csrf, script)
    assert dialout.status_code == response.status_code == 422
    for answer in (dialout.json(), response.json()):
        error = next(e for e in answer["detail"] if e["loc"][-1] == field or field in e["loc"])
        assert words in error["msg"], error
    assert (await server.get("/calls")).json()["calls"] == []


async def test_a_test_call_of_a_campaign_contact_runs_its_script_and_leaves_the_campaign_alone(vendors, server):
    campaign = (await server.post("/campaigns", {"name": "Spring", "settings": {
        "timezone": "UTC", "greeting": "Hi {first_name}, this is Acme Clinic."}})).json()
    await server.post(f"/campaigns/{campaign['id']}/contacts", content=b"phone,first_name\n+12125550101,Ada\n",
                      headers={"Content-Type": "text/csv"})
    contact = (await server.get(f"/campaigns/{campaign['id']}/contacts")).json()["contacts"][0]
    async with signed_in(server) as (client, csrf):
        page = await client.get("/console/test-call", params={"campaign_id": campaign["id"]})
        assert page.status_code == 200 and f'<option value="{contact["id"]}">+12125550101 Ada</option>' in page.text
        assert (await client.get("/console/test-call", params={"campaign_id": "nope"})).status_code == 404
        unknown = await create_test_call(client, csrf, {"campaign_id": campaign["id"], "contact_id": contact["id"] + 99})
        assert unknown.status_code == 404 and "no contact" in unknown.text
        assert (await create_test_call(client, csrf, {"contact_id": contact["id"]})).status_code == 422
        response = await create_test_call(client, csrf, {"campaign_id": campaign["id"], "contact_id": contact["id"]})
    assert response.status_code == 201, response.text
    record = (await server.get(f"/calls/{response.json()['call_id']}")).json()
    assert (record["channel"], record["campaign_id"], record["contact_id"]) == ("browser", None, None)
    assert record["variables"] == {"first_name": "Ada"} and record["metadata"]["test_of_campaign"] == campaign["id"]
    await wait_for(lambda: vendors.cartesia.bytes_requests, 5)  # the greeting is synthesised at once, as for a dial
    assert vendors.cartesia.bytes_requests[0]["transcript"] == "Hi Ada, this is Acme Clinic."
    after = (await server.get(f"/campaigns/{campaign['id']}/contacts")).json()["contacts"][0]
    assert (after["state"], after["attempts"]) == (contact["state"], 0)
    assert vendors.twilio.rest_requests == []


async def test_the_test_phone_socket_opens_only_from_a_signed_in_console_page(vendors, server):
    async with signed_in(server) as (client, csrf):
        assert (await create_test_call(client, csrf)).status_code == 201  # a call exists: only the handshake decides
        before = vendor_connections(vendors)
        for headers in ({"Origin": server.url}, console_headers(client, "https://evil.example"), {"Cookie": "outcall_console=forged"}):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(socket_url(server), additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 403
        assert vendor_connections(vendors) == before


async def open_test_stream(server, client, start: dict) -> int:
    """Open the test phone's stream with `start` and return the close code the server chose."""
    line = await BrowserLine.open(server, client, start)
    await asyncio.wait_for(line.closed.wait(), 10)
    await line.close()
    return line.ws.close_code


@pytest.mark.parametrize("tamper", ["forged", "expired", "replayed", "phone call's token"])
async def test_bad_tokens_close_the_test_phone_before_any_vendor(vendors, server, tamper):
    secret = server.settings.secret("stream_secret")
    async with signed_in(server) as (client, csrf):
        start = (await create_test_call(client, csrf)).json()
        params = start["custom_parameters"]
        fields = dict(call_id=params["call_id"], call_sid=start["call_sid"], to_number="browser", from_number=params["from_number"])
        if tamper == "forged":
            params["stream_token"] = issue_stream_token("guessed-secret", ttl_secs=60, **fields)
        elif tamper == "expired":
            params["stream_token"] = issue_stream_token(secret, ttl_secs=30, now=time.time() - 60, **fields)
        elif tamper == "replayed":
            first = await BrowserLine.open(server, client, start)
            await first.hear_bot(5)
            await first.hang_up()
            await server.record(start["call_id"], until=lambda r: r["status"] == "completed")
        elif tamper == "phone call's token":
            call, held = await place_held_call(vendors, server)
            await wait_for(lambda: vendors.deepgram.connections and vendors.cartesia.connections, 10)  # its own bot's
            start = {**start, "call_sid": call.sid, "custom_parameters": call.custom_parameters}
        before = vendor_connections(vendors)
        assert await open_test_stream(server, client, start) == 1008
        assert vendor_connections(vendors) == before
    if tamper == "phone call's token":
        held.set()
        await call.hang_up()


async def test_a_test_calls_token_opens_no_phone_stream(vendors, server):
    async with signed_in(server) as (client, csrf):
        start = (await create_test_call(client, csrf)).json()
    before = vendor_connections(vendors)
    assert await open_stream(server, start["call_sid"], start["custom_parameters"]) == 1008  # signed as Twilio signs
    assert vendor_connections(vendors) == before
    assert (await server.get(f"/calls/{start['call_id']}")).json()["status"] == "initiated"


async def test_a_test_call_talks_and_ends_like_a_phone_call_without_twilio(vendors, server):
    vendors.deepgram.transcripts = ["yes this is ada, goodbye"]
    async with signed_in(server) as (client, csrf):
        start = (await create_test_call(client, csrf, {"greeting": "Hello {name}, this is the clinic calling.", "variables": {"name": "Ada"}})).json()
        line = await BrowserLine.open(server, client, start)
        await line.hear_bot(10)  # the greeting
        line.say(speech("yes_this_is_ada"))
        await asyncio.wait_for(line.closed.wait(), 20)  # the LLM said goodbye and ended the call
        await line.close()
    record = await server.record(start["call_id"], until=lambda r: r["status"] == "completed" and r["summary"])
    assert (record["channel"], record["end_reason"], record["to_number"]) == ("browser", "bot-ended", "browser")
    assert [t["speaker"] for t in record["transcript"]][:3] == ["bot", "callee", "bot"]
    assert record["transcript"][0]["text"] == "Hello Ada, this is the clinic calling."
    assert [s["status"] for s in record["timeline"]] == ["queued", "initiated", "in-progress", "completed"]
    assert record["talk_secs"] > 1
    assert vendors.twilio.rest_requests == []  # no dial, no REST hang-up
    figures = (await server.get("/calls/figures")).json()
    assert figures["placed"] == 0 and figures["outcomes"] == {}
    assert [c["id"] for c in (await server.get("/calls", channel="browser")).json()["calls"]] == [start["call_id"]]
    assert (await server.get("/calls", channel="phone")).json()["calls"] == []


@pytest.mark.parametrize("server_overrides", [{"test_calls_max": 1}])
async def test_test_calls_are_capped_and_can_be_disabled(server, server_overrides):
    async with signed_in(server) as (client, csrf):
        assert (await create_test_call(client, csrf)).status_code == 201
        over = await create_test_call(client, csrf)
        assert over.status_code == 429 and "TEST_CALLS_MAX" in over.text
    server.settings.test_calls = False
    async with signed_in(server) as (client, csrf):
        disabled = await create_test_call(client, csrf)
        assert disabled.status_code == 404 and "TEST_CALLS=false" in disabled.text


@pytest.fixture
def server_clock():
    return MovableClock(start=datetime.now(UTC))


async def test_a_test_call_whose_browser_never_connects_is_closed(server, server_clock):
    async with signed_in(server) as (client, csrf):
        start = (await create_test_call(client, csrf)).json()
    server_clock.advance(timedelta(minutes=2))
    record = await server.record(start["call_id"], until=lambda r: r["status"] == "canceled", timeout=10)
    assert record["end_reason"] == "error" and "never connected" in record["error"]
    assert API_KEY not in json.dumps(record)
