"""`uv run bot.py -t twilio -x <host>`: Pipecat's development runner serves the bot."""

import asyncio
import os
import sys
from pathlib import Path

import httpx

from tests.conftest import CALLEE_NUMBER, OUR_NUMBER, free_port

ROOT = Path(__file__).parent.parent


async def test_the_development_runner_answers_a_call(vendors, tmp_path):
    port = free_port()
    body = tmp_path / "body.yaml"
    body.write_text("name: Linus\n")
    env = {
        **os.environ,
        "TWILIO_ACCOUNT_SID": vendors.twilio.account_sid,
        "TWILIO_AUTH_TOKEN": vendors.twilio.auth_token,
        "TWILIO_API_BASE_URL": vendors.twilio.base_url,
        "DEEPGRAM_API_KEY": vendors.deepgram.api_key,
        "DEEPGRAM_BASE_URL": vendors.deepgram.base_url,
        "GOOGLE_API_KEY": vendors.gemini.api_key,
        "GOOGLE_API_BASE_URL": vendors.gemini.base_url,
        "CARTESIA_API_KEY": vendors.cartesia.api_key,
        "CARTESIA_URL": vendors.cartesia.url,
        "BOT_GREETING": "Hello {name}, this is a development call.",
        "TURN_STOP": "speech_timeout",
    }
    runner = await asyncio.create_subprocess_exec(
        sys.executable, "bot.py", "-t", "twilio", "-x", "dev-box.ngrok.app", "--port", str(port),
        "--runner-body", str(body), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                try:
                    await client.get(f"http://127.0.0.1:{port}/")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        vendors.twilio.hosts["dev-box.ngrok.app"] = f"127.0.0.1:{port}"
        async with httpx.AsyncClient(auth=(vendors.twilio.account_sid, vendors.twilio.auth_token)) as client:
            created = await client.post(
                f"{vendors.twilio.base_url}/2010-04-01/Accounts/{vendors.twilio.account_sid}/Calls.json",
                data={"To": CALLEE_NUMBER, "From": OUR_NUMBER, "Url": f"http://127.0.0.1:{port}/"},
            )
        call = vendors.twilio.calls[created.json()["sid"]]
        await asyncio.wait_for(call._bot_voice.wait(), 30)
        assert call.stream_url == "wss://dev-box.ngrok.app/ws"
        await call.hang_up()
        assert vendors.cartesia.transcripts[0] == "Hello Linus, this is a development call."
    finally:
        runner.terminate()
        _, stderr = await runner.communicate()
    assert b"Development runner: this stream is not authenticated" in stderr
