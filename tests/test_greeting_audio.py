"""The greeting is synthesised while the phone rings and reaches the callee before the bot's
pipeline has connected to any speech service."""

import asyncio

import httpx
import pytest

from tests.conftest import API_KEY, CALLEE_NUMBER, SHUTDOWN_GRACE_SECS, free_port, make_settings, speech, start_server

GREETING = "Hi {name}, this is Sam from Acme Clinic."


async def converse(call):
    await call.wait_for_bot_to_speak()
    await call.say(speech("thanks_goodbye"))


async def place(server, vendors, **body) -> tuple[dict, object]:
    response = await server.dialout({"to_number": CALLEE_NUMBER, **body})
    assert response.status_code == 200, response.text
    call = vendors.twilio.calls[response.json()["call_sid"]]
    await asyncio.wait_for(call.ended.wait(), 30)
    assert call.callee_error is None, repr(call.callee_error)
    return response.json(), call


async def test_greeting_synthesised_while_ringing_is_heard_first(vendors, server):
    vendors.twilio.callee = converse
    vendors.deepgram.transcripts = ["okay thank you goodbye"]

    body, call = await place(server, vendors, variables={"name": "Ada"}, greeting=GREETING)

    # One REST synthesis of the rendered greeting, in Twilio's own format, with the call's voice.
    [request] = vendors.cartesia.bytes_requests
    assert request["transcript"] == "Hi Ada, this is Sam from Acme Clinic."
    assert request["output_format"] == {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000}
    assert request["voice"]["id"] == server.settings.cartesia_voice
    assert request["model_id"] == server.settings.cartesia_model
    # The live TTS never spoke it; the callee heard it anyway, before the pipeline's first words.
    live = [r.get("transcript", "") for r in vendors.cartesia.requests]
    assert not any("Acme Clinic" in text for text in live)  # (how soon it is heard: bench/call_bench.py)
    greeting_secs = len("Hi Ada, this is Sam from Acme Clinic.") * 0.012
    assert call.heard_seconds() >= greeting_secs

    # The LLM knows it greeted, and the record's transcript starts with the greeting.
    assert "Hi Ada, this is Sam from Acme Clinic." in str(vendors.gemini.requests[0]["contents"])
    record = await server.record(body["call_id"], until=lambda r: r["end_reason"] and r["transcript"])
    assert (record["transcript"][0]["speaker"], record["transcript"][0]["text"]) == (
        "bot",
        "Hi Ada, this is Sam from Acme Clinic.",
    )
    assert ("callee", "okay thank you goodbye") in [(t["speaker"], t["text"]) for t in record["transcript"]]


async def test_a_greeting_without_placeholders_is_synthesised_once(vendors, server):
    vendors.twilio.callee = converse
    for _ in range(2):
        vendors.deepgram.transcripts = ["okay thank you goodbye"]
        await place(server, vendors)
    assert len(vendors.cartesia.bytes_requests) == 1


@pytest.mark.parametrize("server_overrides", [{"cartesia_api_url": f"http://127.0.0.1:{free_port()}"}])
async def test_without_the_rest_api_the_bot_says_the_greeting_live(vendors, server):
    vendors.twilio.callee = converse
    vendors.deepgram.transcripts = ["okay thank you goodbye"]

    await place(server, vendors, variables={"name": "Ada"}, greeting=GREETING)

    assert vendors.cartesia.bytes_requests == []
    assert vendors.cartesia.requests[0]["transcript"].startswith("Hi Ada, this is Sam")



async def test_a_greeting_reaches_another_server_process_through_the_database(vendors, tmp_path):
    """WORKERS > 1 or several instances: the process that placed the call synthesised the
    greeting; the one the stream reaches plays it all the same."""
    database_url = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    streams_port, dialer_port = free_port(), free_port()
    streams = make_settings(vendors, streams_port, database_url=database_url)
    dialer = make_settings(vendors, dialer_port, database_url=database_url, server_url=streams.server_url)
    servers = [await start_server(streams), await start_server(dialer)]
    try:
        vendors.twilio.callee = converse
        vendors.deepgram.transcripts = ["okay thank you goodbye"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{dialer_port}", timeout=30) as client:
            body = {"to_number": CALLEE_NUMBER, "variables": {"name": "Ada"}, "greeting": GREETING}
            response = await client.post("/dialout", json=body, headers={"X-API-Key": API_KEY})
        assert response.status_code == 200, response.text
        call = vendors.twilio.calls[response.json()["call_sid"]]
        await asyncio.wait_for(call.ended.wait(), 30)
        assert call.stream_url.startswith(streams.server_url.replace("http", "ws"))  # the other process's stream

        [request] = vendors.cartesia.bytes_requests  # synthesised once, by the dialing process
        assert request["transcript"] == "Hi Ada, this is Sam from Acme Clinic."
        live = [r.get("transcript", "") for r in vendors.cartesia.requests]
        assert not any("Acme Clinic" in text for text in live)  # the streaming process never said it live
        assert call.heard_seconds() >= len(request["transcript"]) * 0.012
    finally:
        for server, _ in servers:
            server.should_exit = True
        await asyncio.wait_for(asyncio.gather(*(task for _, task in servers)), SHUTDOWN_GRACE_SECS + 15)
