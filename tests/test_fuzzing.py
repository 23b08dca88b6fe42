"""The API fuzzed from its own OpenAPI schema (Schemathesis), against the real server and the
Twilio emulator: no request may get a 5xx, and every response must match what the schema says.

Requests carry the API key, so the fuzzer gets past authentication and into validation; the
Twilio webhooks get no signature and must answer 403, never 500. Calls that the fuzzer manages to
place ring a busy line (no bot runs). The number of examples is bounded to keep the suite quick.
"""

import asyncio
import threading

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from outcall.settings import Settings
from server import create_app
from tests.conftest import (
    ACCOUNT_SID, API_KEY, AUTH_TOKEN, OUR_NUMBER, Vendors, free_port, make_settings, polite_llm, start_server,
)
from tests.fakes.cartesia import FakeCartesia
from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.gemini import FakeGemini
from tests.fakes.twilio import TwilioEmulator

EXAMPLES_PER_OPERATION = 30
schema = schemathesis.openapi.from_dict(create_app(Settings(_env_file=None)).openapi())


class LiveServer(threading.Thread):
    """The server and the vendor fakes on an event loop of their own, for the fuzzer's sync requests."""

    def __init__(self, database_url: str):
        super().__init__(daemon=True)
        self.database_url = database_url
        self.ready = threading.Event()
        self.url = ""
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        twilio = await TwilioEmulator(ACCOUNT_SID, AUTH_TOKEN, {OUR_NUMBER}).start()
        twilio.answer_default = "busy"
        vendors = Vendors(twilio, await FakeDeepgram("dg-key").start(), await FakeGemini("google-key", polite_llm).start(),
                          await FakeCartesia("cartesia-key").start())
        settings = make_settings(vendors, free_port(), database_url=self.database_url, log_level="WARNING")
        uv_server, task = await start_server(settings)
        self.url = settings.server_url
        self.ready.set()
        await self._stopping.wait()
        uv_server.should_exit = True
        await asyncio.wait_for(task, 20)
        for fake in (vendors.twilio, vendors.deepgram, vendors.gemini, vendors.cartesia):
            await fake.stop()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopping.set)
        self.join(30)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    server = LiveServer(f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fuzz')}/outcall.db")
    server.start()
    assert server.ready.wait(30), "server did not start"
    yield server.url
    server.stop()


@schema.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)
def test_no_request_gets_a_server_error_and_responses_match_the_schema(case, live_server):
    response = case.call(base_url=live_server, headers={"X-API-Key": API_KEY}, timeout=20)
    case.validate_response(
        response,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )
    if case.method == "POST" and (case.path.startswith("/twilio/") or case.path == "/twiml"):
        assert response.status_code == 403, response.text  # unsigned: refused, whatever the body
