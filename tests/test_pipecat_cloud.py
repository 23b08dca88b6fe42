"""ENV=production: Twilio streams to Pipecat Cloud, whose bot claims its call from our server."""

import asyncio

import pytest
import uvicorn
from fastapi import FastAPI, WebSocket
from pipecat.runner.types import WebSocketRunnerArguments

import bot
from tests.conftest import CALLEE_NUMBER, free_port, speech

pytestmark = pytest.mark.parametrize(
    "server_overrides",
    [{"env": "production", "agent_name": "outcall", "organization_name": "acme", "pipecat_cloud_region": "us-east"}],
)


@pytest.fixture
async def pipecat_cloud(server, monkeypatch):
    """A stand-in for Pipecat Cloud: runs `bot.bot()` configured only by its environment."""
    settings = server.settings
    env = {
        "SERVER_URL": settings.server_url,
        "STREAM_SECRET": settings.secret("stream_secret"),
        "TWILIO_ACCOUNT_SID": settings.twilio_account_sid,
        "TWILIO_AUTH_TOKEN": settings.secret("twilio_auth_token"),
        "TWILIO_API_BASE_URL": settings.twilio_api_base_url,
        "DEEPGRAM_API_KEY": settings.secret("deepgram_api_key"),
        "DEEPGRAM_BASE_URL": settings.deepgram_base_url,
        "GOOGLE_API_KEY": settings.secret("google_api_key"),
        "GOOGLE_API_BASE_URL": settings.google_api_base_url,
        "CARTESIA_API_KEY": settings.secret("cartesia_api_key"),
        "CARTESIA_URL": settings.cartesia_url,
        "TURN_STOP": "speech_timeout",
        "USER_SPEECH_TIMEOUT_SECS": "0.3",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir("/")  # no .env from the checkout
    sessions = []
    app = FastAPI()

    @app.websocket("/ws/twilio")
    async def session(websocket: WebSocket):
        await websocket.accept()
        sessions.append(websocket)
        await bot.bot(WebSocketRunnerArguments(websocket=websocket))

    port = free_port()
    cloud = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5))
    task = asyncio.create_task(cloud.serve())
    while not cloud.started:
        await asyncio.sleep(0.01)
    yield port, sessions
    cloud.should_exit = True
    await asyncio.wait_for(task, 20)


async def test_the_bot_on_pipecat_cloud_fetches_its_call_and_talks(vendors, server, pipecat_cloud):
    port, sessions = pipecat_cloud
    vendors.twilio.hosts["us-east.api.pipecat.daily.co"] = f"127.0.0.1:{port}"

    async def callee(call):
        await call.wait_for_bot_to_speak()
        await call.say(speech("thanks_goodbye"))

    vendors.twilio.callee = callee
    vendors.deepgram.transcripts = ["okay thank you goodbye"]
    response = await server.dialout(
        {"to_number": CALLEE_NUMBER, "variables": {"name": "Grace"}, "greeting": "Good morning {name}."}
    )
    assert response.status_code == 200, response.text
    call = vendors.twilio.calls[response.json()["call_sid"]]
    await asyncio.wait_for(call.ended.wait(), 30)
    assert call.callee_error is None, repr(call.callee_error)

    assert call.stream_url == "wss://us-east.api.pipecat.daily.co/ws/twilio"
    assert call.custom_parameters["_pipecatCloudServiceHost"] == "outcall.acme"
    assert len(sessions) == 1
    assert vendors.cartesia.transcripts[0] == "Good morning Grace."
    # The server synthesised the greeting while the phone rang; the remote bot got it with its call.
    assert [r["transcript"] for r in vendors.cartesia.bytes_requests] == ["Good morning Grace."]
    assert not any("Good morning" in r.get("transcript", "") for r in vendors.cartesia.requests)
    assert vendors.cartesia.spoken_text().endswith("Goodbye!")
    assert {"Status": "completed"} in call.updates

    # The remote bot reported its call over HTTP, with the report token it got at its claim.
    record = await server.record(response.json()["call_id"], until=lambda r: r["summary"])
    assert record["end_reason"] == "bot-ended"
    assert ("callee", "okay thank you goodbye") in [(t["speaker"], t["text"]) for t in record["transcript"]]


async def test_a_replayed_stream_is_refused_by_the_server(vendors, server, pipecat_cloud):
    port, sessions = pipecat_cloud
    vendors.twilio.hosts["us-east.api.pipecat.daily.co"] = f"127.0.0.1:{port}"
    call_id = (await server.dialout({"to_number": CALLEE_NUMBER})).json()["call_id"]
    call = vendors.twilio.only_call()
    while not call.bot_audio:
        await asyncio.sleep(0.01)
    token = call.custom_parameters["stream_token"]
    second = await server.client.get(f"/calls/{call_id}/config", headers={"Authorization": f"Bearer {token}"})
    assert second.status_code == 409
    await call.hang_up()
