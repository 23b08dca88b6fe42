"""Shared fixtures: every vendor faked on 127.0.0.1 and the real server in front of them."""

import asyncio
import json
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from outcall.settings import Settings
from server import SHUTDOWN_GRACE_SECS, create_app
from tests.fakes.cartesia import FakeCartesia
from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.gemini import FakeGemini, last_user_text
from tests.fakes.twilio import TwilioEmulator

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-test-auth-token"
API_KEY = "test-dialout-key"
OUR_NUMBER = "+14155550100"
CALLEE_NUMBER = "+14155552671"
FIXTURES = Path(__file__).parent / "fixtures"


def speech(name: str) -> bytes:
    """A recorded callee line, 8 kHz μ-law (see fixtures/make_speech.sh)."""
    return (FIXTURES / f"{name}.ulaw").read_bytes()


def conversation(*lines: str, hang_up: bool = False):
    """A scripted callee: hears the greeting, says each recorded line and hears the reply to it,
    then (if `hang_up`) puts the phone down."""
    async def callee(call):
        await call.wait_for_bot_to_speak()  # the greeting
        for line in lines:
            await call.say(speech(line))
            await call.wait_for_bot_to_speak()
        if hang_up:
            await call.hang_up()

    return callee


def polite_llm(request: dict) -> list[dict]:
    """The fake LLM's default behaviour: answer, and hang up when the callee says goodbye."""
    heard = last_user_text(request).lower()
    if "goodbye" in heard or "bye" in heard:
        return [
            {"text": "Thank you for your time. Goodbye!"},
            {"functionCall": {"name": "end_call", "args": {"reason": "callee said goodbye"}}},
        ]
    return [{"text": "I'm calling to confirm your appointment. Does that time still work?"}]


@dataclass
class Vendors:
    twilio: TwilioEmulator
    deepgram: FakeDeepgram
    gemini: FakeGemini
    cartesia: FakeCartesia


@pytest.fixture
async def vendors() -> AsyncIterator[Vendors]:
    fakes = Vendors(
        twilio=await TwilioEmulator(ACCOUNT_SID, AUTH_TOKEN, {OUR_NUMBER}).start(),
        deepgram=await FakeDeepgram("dg-key").start(),
        gemini=await FakeGemini("google-key", polite_llm).start(),
        cartesia=await FakeCartesia("cartesia-key").start(),
    )
    yield fakes
    for fake in (fakes.twilio, fakes.deepgram, fakes.gemini, fakes.cartesia):
        await fake.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(vendors: Vendors, port: int, **overrides) -> Settings:
    values = dict(
        database_url="sqlite+aiosqlite:///:memory:",
        env="local",
        port=port,
        server_url=f"http://127.0.0.1:{port}",
        dialout_api_key=API_KEY,
        stream_secret="test-stream-secret",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_phone_number=OUR_NUMBER,
        twilio_api_base_url=vendors.twilio.base_url,
        deepgram_api_key="dg-key",
        deepgram_base_url=vendors.deepgram.base_url,
        google_api_key="google-key",
        google_api_base_url=vendors.gemini.base_url,
        cartesia_api_key="cartesia-key",
        cartesia_url=vendors.cartesia.url,
        cartesia_api_url=vendors.cartesia.api_url,
        # Robotic test speech: end turns on a fixed pause, not smart-turn's judgement.
        turn_stop="speech_timeout",
        user_speech_timeout_secs=0.3,
        log_level="DEBUG",
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class RunningServer:
    settings: Settings
    url: str
    client: httpx.AsyncClient

    async def dialout(self, payload: dict, api_key: str | None = API_KEY) -> httpx.Response:
        headers = {"X-API-Key": api_key} if api_key else {}
        return await self.client.post("/dialout", json=payload, headers=headers)

    async def get(self, path: str, **params) -> httpx.Response:
        return await self.client.get(path, params=params, headers={"X-API-Key": API_KEY})

    async def post(self, path: str, json: dict | None = None, **kwargs) -> httpx.Response:
        return await self.client.post(path, json=json, headers={"X-API-Key": API_KEY, **kwargs.pop("headers", {})}, **kwargs)

    async def record(self, call_id: str, until=lambda record: record["end_reason"], timeout: float = 20) -> dict:
        """The call's record from GET /calls/{id}, once `until(record)` holds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            response = await self.get(f"/calls/{call_id}")
            assert response.status_code == 200, response.text
            record = response.json()
            if until(record):
                return record
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"record never got there: {record}")
            await asyncio.sleep(0.1)


async def start_server(settings: Settings, clock=None) -> tuple[uvicorn.Server, asyncio.Task]:
    config = uvicorn.Config(create_app(settings, clock), host="127.0.0.1", port=settings.port, log_level="warning", lifespan="on",
                            ws_per_message_deflate=False, timeout_graceful_shutdown=SHUTDOWN_GRACE_SECS)  # as server.py runs it
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task


ROOT = Path(__file__).resolve().parent.parent


def server_environment(settings: Settings) -> dict[str, str]:
    """`settings` as the environment of a server process (nothing inherited but PATH and the like)."""
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "VIRTUAL_ENV")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        value = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        if isinstance(value, list):  # CALL_OUTCOMES is comma-separated, ANALYSIS_FIELDS JSON
            value = ",".join(value) if all(isinstance(v, str) for v in value) else json.dumps(value)
        env[name.upper()] = str(value)
    return env


async def start_server_process(settings: Settings, log: Path | None = None) -> asyncio.subprocess.Process:
    """`server.py` in a process of its own, as a user runs it; returns once /health answers."""
    output = log.open("w") if log else asyncio.subprocess.DEVNULL
    process = await asyncio.create_subprocess_exec(
        sys.executable, "server.py", cwd=ROOT, env=server_environment(settings), stdout=output, stderr=asyncio.subprocess.STDOUT,
    )
    async with httpx.AsyncClient(base_url=settings.server_url) as client:
        for _ in range(600):
            if process.returncode is not None:
                raise AssertionError(f"server exited: {log.read_text()[-3000:] if log else process.returncode}")
            try:
                if (await client.get("/health")).status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    process.kill()
    raise AssertionError("server did not start in 30 s")


@pytest.fixture
def server_overrides() -> dict:
    """Override in a test module (or parametrize) to change the server's settings."""
    return {}


@pytest.fixture
def server_clock():
    """The server's clock; override with a MovableClock to move time in a test."""
    return None


class MovableClock:
    """Real time flowing from `start`, which a test can move forward (`advance`)."""

    def __init__(self, start: datetime):
        self._offset = start - datetime.now(UTC)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, delta: timedelta) -> None:
        self._offset += delta

    def set(self, at: datetime) -> None:
        self._offset = at - datetime.now(UTC)


POSTGRES_ADMIN_URL = os.environ.get("OUTCALL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def create_postgres_database() -> str:
    """A fresh, empty PostgreSQL database for one test; skips (or fails, in CI) without PostgreSQL."""
    import asyncpg

    name = f"outcall_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        message = f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {e}"
        if os.environ.get("OUTCALL_REQUIRE_POSTGRES") == "1":
            pytest.fail(message + " (OUTCALL_REQUIRE_POSTGRES=1 makes these tests mandatory)")
        pytest.skip(message)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"


async def drop_postgres_database(url: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite"])
async def database_url(request, tmp_path) -> AsyncIterator[str]:
    """Where the server under test keeps its records. Parametrize with ["sqlite", "postgresql"]
    (`@pytest.mark.parametrize("database_url", [...], indirect=True)`) to run on both."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/outcall.db"
        return
    url = await create_postgres_database()
    yield url
    await drop_postgres_database(url)


@pytest.fixture
async def server(vendors: Vendors, server_overrides: dict, database_url: str, server_clock) -> AsyncIterator[RunningServer]:
    port = free_port()
    settings = make_settings(vendors, port, database_url=database_url, **server_overrides)
    uv_server, task = await start_server(settings, server_clock)
    async with httpx.AsyncClient(base_url=settings.server_url, timeout=30) as client:
        yield RunningServer(settings, settings.server_url, client)
    uv_server.should_exit = True
    await asyncio.wait_for(task, SHUTDOWN_GRACE_SECS + 15)  # bounded, whatever calls are open
