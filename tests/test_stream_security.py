"""Webhook signatures and stream tokens: nobody but Twilio, for a call we placed, reaches the bot."""

import asyncio
import json
import time

import pytest
import websockets
from twilio.request_validator import RequestValidator

from outcall.stream_auth import issue_stream_token
from tests.conftest import AUTH_TOKEN, CALLEE_NUMBER, OUR_NUMBER

TWIML_FORM = {"CallSid": "CA" + "1" * 32, "AccountSid": "AC" + "0" * 32, "CallStatus": "in-progress"}


async def post_twiml(server, call_id: str, signature: str | None):
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    return await server.client.post(f"/twiml?call_id={call_id}", data=TWIML_FORM, headers=headers)


def sign(server, path: str, form: dict, token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(server.url + path, form)


@pytest.mark.parametrize(
    "signature",
    [None, "", "bm90IGEgc2lnbmF0dXJl", "signed-with-another-token", "signed-for-another-url"],
)
async def test_twiml_rejects_missing_or_forged_signatures(server, signature):
    path = "/twiml?call_id=abc"
    if signature == "signed-with-another-token":
        signature = sign(server, path, TWIML_FORM, token="someone-else")
    elif signature == "signed-for-another-url":
        signature = sign(server, "/twiml?call_id=other", TWIML_FORM)
    response = await post_twiml(server, "abc", signature)
    assert response.status_code == 403
    assert "X-Twilio-Signature" in response.text


async def test_twiml_for_an_unknown_call_hangs_up(server):
    path = "/twiml?call_id=not-ours"
    response = await post_twiml(server, "not-ours", sign(server, path, TWIML_FORM))
    assert response.status_code == 200
    assert "<Hangup />" in response.text and "<Stream" not in response.text


def stream_url(server) -> str:
    return server.url.replace("http", "ws") + "/ws"


async def open_stream(server, call_sid: str, parameters: dict) -> int:
    """Act as Twilio opening a media stream (signed, as Twilio signs it); returns the close code
    the server chose."""
    signature = RequestValidator(AUTH_TOKEN).compute_signature(stream_url(server), {})
    async with websockets.connect(stream_url(server), additional_headers={"X-Twilio-Signature": signature}) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({
            "event": "start", "sequenceNumber": "1", "streamSid": "MZ" + "2" * 32,
            "start": {"accountSid": "AC" + "0" * 32, "streamSid": "MZ" + "2" * 32, "callSid": call_sid,
                      "tracks": ["inbound"], "customParameters": parameters,
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
        }))
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed:
            pass
        await ws.wait_closed()
        return ws.close_code


@pytest.mark.parametrize("tamper", ["no token", "forged", "other call", "expired", "changed number"])
async def test_streams_without_a_valid_token_are_closed_before_any_vendor(vendors, server, tamper):
    # A real call is placed and answered, so only the token decides.
    greeted, held = asyncio.Event(), asyncio.Event()

    async def callee(call):
        await call.wait_for_bot_to_speak()
        greeted.set()
        await held.wait()

    vendors.twilio.callee = callee
    placed = (await server.dialout({"to_number": CALLEE_NUMBER})).json()
    call = vendors.twilio.calls[placed["call_sid"]]
    await asyncio.wait_for(greeted.wait(), 10)
    call_sid, params = call.sid, dict(call.custom_parameters)
    vendors_before = vendor_connections(vendors)
    secret = server.settings.secret("stream_secret")
    fields = dict(call_id=params["call_id"], to_number=CALLEE_NUMBER, from_number=OUR_NUMBER)
    if tamper == "no token":
        del params["stream_token"]
    elif tamper == "forged":
        params["stream_token"] = issue_stream_token("guessed-secret", call_sid=call_sid, ttl_secs=60, **fields)
    elif tamper == "other call":
        call_sid = "CA" + "9" * 32
    elif tamper == "expired":
        params["stream_token"] = issue_stream_token(secret, call_sid=call_sid, ttl_secs=60, now=time.time() - 120, **fields)
    elif tamper == "changed number":
        params["to_number"] = "+14155550123"

    assert await open_stream(server, call_sid, params) == 1008
    after = vendor_connections(vendors)
    assert after == vendors_before
    held.set()
    await call.hang_up()


def vendor_connections(vendors) -> tuple[int, int, int]:
    """How often the speech and LLM services have been contacted so far."""
    return len(vendors.deepgram.connections), vendors.cartesia.connections, len(vendors.gemini.requests)


async def place_held_call(vendors, server, until=lambda call: call.bot_audio):
    """A real call, placed and answered, whose callee stays on the line until `held` is set."""
    held = asyncio.Event()

    async def callee(call):
        await held.wait()

    vendors.twilio.callee = callee
    placed = (await server.dialout({"to_number": CALLEE_NUMBER})).json()
    call = vendors.twilio.calls[placed["call_sid"]]
    while not until(call):
        await asyncio.sleep(0.01)
    return call, held


async def test_a_token_opens_one_stream_only(vendors, server):
    call, held = await place_held_call(vendors, server)
    # Replaying the very parameters Twilio sent cannot start a second bot.
    assert await open_stream(server, call.sid, call.custom_parameters) == 1008
    held.set()
    await call.hang_up()


async def test_call_config_endpoint_requires_the_stream_token(server):
    response = await server.client.get("/calls/some-id/config")
    assert response.status_code == 401
    response = await server.client.get("/calls/some-id/config", headers={"Authorization": "Bearer v1.1.abc"})
    assert response.status_code == 404


@pytest.mark.parametrize("signature", [None, "bm90IGEgc2lnbmF0dXJl", "signed-with-another-token", "signed-for-another-url"])
async def test_streams_without_twilios_signature_are_refused_at_the_handshake(vendors, server, signature):
    """In-process, the `/ws` handshake must carry Twilio's signature too, even with a valid token."""
    call, held = await place_held_call(vendors, server, until=lambda call: call.custom_parameters)
    vendors_before = vendor_connections(vendors)
    if signature == "signed-with-another-token":
        signature = RequestValidator("someone-else").compute_signature(stream_url(server), {})
    elif signature == "signed-for-another-url":
        signature = RequestValidator(AUTH_TOKEN).compute_signature("wss://elsewhere.example/ws", {})
    headers = {"X-Twilio-Signature": signature} if signature else {}
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(stream_url(server), additional_headers=headers):
            pass
    assert refused.value.response.status_code == 403
    after = vendor_connections(vendors)
    assert after == vendors_before
    held.set()
    await call.hang_up()
