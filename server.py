"""The dial-out server: places calls through Twilio, answers Twilio's webhooks, hosts the bot.

    uv run server.py

Routes:
- POST /dialout                 start a call (API key)
- POST /twiml                   Twilio asks what to do with the answered call (Twilio signature)
- WS   /ws                      Twilio's media stream, when the bot runs in this process (Twilio signature + stream token),
                                or the console's test phone speaking the same protocol (session + Origin + stream token)
- /calls…                       call records, hang-up; the bot's claim and reports (outcall/calls_api.py)
- /campaigns…                   campaigns and their contacts (outcall/campaigns_api.py)
- /agents…                      saved, versioned agent profiles (outcall/agents_api.py)
- /do-not-call…                 the do-not-call list (outcall/do_not_call_api.py)
- /twilio/…                     status, answering-machine and recording callbacks (outcall/twilio_webhooks.py)
- GET  /health                  200, or 503 while draining for a shutdown (outcall/draining.py)
"""

import asyncio
import gc
import uuid
from functools import partial
from contextlib import asynccontextmanager

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from fastapi.responses import JSONResponse, Response
from loguru import logger
from pipecat.runner.types import WebSocketRunnerArguments
from pydantic import ValidationError

import bot
from outcall import agents_api, browser_calls, calls_api, campaigns_api, do_not_call_api, prompts, twilio_webhooks
from outcall.agent_store import AgentError, AgentStore
from outcall.agents import AgentProfile, config_with_agent, script_with_agent
from outcall.api_errors import error_responses, unprocessable
from outcall.call_events import CallEventDelivery
from outcall.call_store import CallStore
from outcall.dashboard import pages as console_pages
from outcall.dashboard.feed import CallFeed
from outcall.dashboard.headers import SecurityHeaders
from outcall.dashboard.sessions import ConsoleSessions
from outcall.campaign_store import CampaignStore
from outcall.clock import Clock, SystemClock
from outcall.dispatcher import Dispatcher
from outcall.do_not_call import DoNotCallList
from outcall.draining import RETRY_AFTER_SECS, Drain, EndCall, LiveCalls
from outcall.greetings import GreetingAudio
from outcall.calls import CallConfig, render_call_config
from outcall.database import Database, DatabaseBusy
from outcall.reconciler import CallReconciler
from outcall.reports import CallReport, TransferRequest
from outcall.request_body import non_finite_number
from outcall.dependencies import SettingsDep, CallStoreDep, require_api_key
from outcall.settings import Settings
from outcall.stream_auth import issue_stream_token
from outcall.values import Channel
from outcall.twilio_api import (
    TWIML_MAX_CHARS,
    TwilioCallError,
    create_twilio_client,
    hangup_twiml,
    make_twilio_call,
    twilio_form,
    twilio_signed_stream,
)
from pipelines.default import load_shared_models
from server_utils import DialoutRequest, DialoutResponse, generate_twiml


SHUTDOWN_GRACE_SECS = 10  # after the drain, what is still open gets this long before it is cancelled


def calling_not_configured(settings: Settings) -> list[str]:
    """The settings calls need that are missing."""
    return [
        name
        for name in ("SERVER_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "STREAM_SECRET")
        if not getattr(settings, name.lower())
    ]


def require_calling_configured(settings: SettingsDep) -> None:
    missing = calling_not_configured(settings)
    if missing:
        raise HTTPException(503, f"Calling is not configured: set {', '.join(missing)} on the server")


async def build_call_config(request: DialoutRequest, settings: Settings, agents: AgentStore) -> tuple[CallConfig, dict]:
    """Render the call's templates now (with its agent's, if it names one), so a missing value
    is a 422, not a mid-call surprise. Returns the config and the variables it was filled with."""
    from_number = request.from_number or settings.twilio_phone_number
    if not from_number:
        raise unprocessable("from_number", "from_number is required: the server has no TWILIO_PHONE_NUMBER default")
    agent = None
    if request.agent_id:
        try:
            agent = await agents.get(request.agent_id)
        except AgentError as e:
            raise unprocessable("agent_id", e.message)
    profile = AgentProfile.model_validate(agent.profile) if agent else None
    script = script_with_agent(profile, request) if profile else request
    try:
        config = render_call_config(
            settings, script, call_id=str(uuid.uuid4()), to_number=request.to_number, from_number=from_number
        )
    except prompts.TemplateError as e:
        raise unprocessable(e.field, str(e))
    if agent:
        config = config_with_agent(config, profile, agent.id, agent.version)
    return config, script.variables


class InProcessServerLink:
    """What a bot running inside this server uses to reach it: the same code, without HTTP.

    `channel`: what opened the stream (Twilio, or the console's test phone); a call can only be
    claimed over the channel it was made for."""

    def __init__(self, app: FastAPI, channel: Channel = Channel.PHONE):
        self.app = app
        self.channel = channel
        self.settings: Settings = app.state.settings
        self.store: CallStore = app.state.call_store
        self.claimed_call_id: str | None = None

    async def claim(self, call_id: str, stream_token: str) -> CallConfig:
        config = await calls_api.claim_call(
            self.store, self.app.state.greetings, self.settings, call_id, stream_token, self.channel
        )
        self.claimed_call_id = call_id
        return config

    async def stream_closed(self) -> None:
        """A test call ends when its socket does: no Twilio status callback will say so."""
        if self.channel == Channel.BROWSER and self.claimed_call_id:
            await self.store.browser_call_ended(self.claimed_call_id)

    async def report(self, config: CallConfig, report: CallReport) -> None:
        await self.store.apply_report(config.call_id, report)

    def call_started(self, call_id: str, end_call: EndCall) -> None:
        self.app.state.live_calls.started(call_id, end_call)

    def call_finished(self, call_id: str) -> None:
        self.app.state.live_calls.finished(call_id)

    async def transfer(self, config: CallConfig, note: TransferRequest) -> bool:
        try:
            await calls_api.transfer_to_person(self.store, self.app.state.twilio, self.settings, config.call_id, note)
            return True
        except (HTTPException, TwilioCallError) as e:
            logger.error(f"Transfer of call {config.call_id} failed: {getattr(e, 'detail', None) or e}")
            return False


def create_app(settings: Settings | None = None, clock: Clock | None = None, handle_signals: bool = False) -> FastAPI:
    """The server. `handle_signals`: SIGTERM drains calls first (outcall/draining.py), and what
    startup made is kept from the garbage collector; a real server process sets it, a test server
    started inside pytest does not."""
    settings = settings or Settings()
    clock = clock or SystemClock()
    errors = settings.startup_errors()
    if errors:
        raise RuntimeError("; ".join(errors))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        report_missing_settings(settings)
        await asyncio.to_thread(load_shared_models, settings)
        database = Database(settings.database_url)
        await database.migrate()
        delivery = None
        events_secret = settings.secret("call_events_secret")
        if settings.call_events_webhook_url and events_secret:
            delivery = CallEventDelivery(
                database, settings.call_events_webhook_url, events_secret, retention_days=settings.call_events_retention_days
            )
            delivery.start()
        app.state.call_store = CallStore(
            database, events_enabled=delivery is not None, on_event=delivery.wake if delivery else lambda: None, clock=clock
        )
        app.state.campaigns = CampaignStore(database, clock)
        app.state.agents = AgentStore(database, clock)
        app.state.do_not_call = DoNotCallList(database)
        app.state.twilio = create_twilio_client(settings) if settings.twilio_account_sid else None
        app.state.greetings = GreetingAudio(settings, settings.greeting_cache_mb * 2**20, database)
        reconciler = CallReconciler(app.state.call_store, app.state.twilio, settings.max_call_duration_secs)
        reconciler.start()
        app.state.dispatcher = None
        if settings.dialer_enabled and app.state.twilio and not calling_not_configured(settings):
            app.state.dispatcher = Dispatcher(
                database, app.state.call_store, settings, app.state.twilio, clock, app.state.greetings
            )
            app.state.call_store.on_slot_freed = app.state.dispatcher.wake
            app.state.dispatcher.start()
        app.state.live_calls = LiveCalls()
        app.state.console_sessions = ConsoleSessions(settings)
        app.state.call_feed = CallFeed(
            app.state.call_store, partial(console_pages.overview_summary, app.state.call_store, app.state.campaigns)
        )
        app.state.drain = Drain(app.state.live_calls, settings.shutdown_drain_secs, app.state.call_store, app.state.dispatcher)
        app.state.drain.before_exit = app.state.call_feed.close  # live pages let go, so uvicorn need not wait
        if handle_signals:  # a real server process
            app.state.drain.install()
            # What startup made (~250k objects: modules, models, settings) lives as long as the
            # process; left to the collector, each full collection walked them all on the event
            # loop for ~110 ms, which every call's audio waited behind (late frames at 10 calls).
            gc.freeze()
        yield
        await app.state.call_feed.close()
        if app.state.dispatcher:
            await app.state.dispatcher.stop()
        await reconciler.stop()
        if delivery:
            await delivery.stop()
        await app.state.greetings.close()
        if app.state.twilio:
            await app.state.twilio.http_client.close()
        await database.close()

    app = FastAPI(title="outcall", lifespan=lifespan)
    app.state.settings = settings
    app.include_router(calls_api.router)
    app.include_router(campaigns_api.router)
    app.include_router(agents_api.router)
    app.include_router(do_not_call_api.router)
    app.include_router(twilio_webhooks.router)
    app.include_router(console_pages.router)
    app.mount("/console/static", StaticFiles(directory=console_pages.HERE / "static"), name="console-static")
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        """FastAPI's 422, except that an input holding NaN (which JSON cannot carry) is left out."""
        errors = [{k: v for k, v in e.items() if k != "input" or non_finite_number(v) is None} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if console_pages.wants_page(request, exc.status_code):
            return console_pages.error_page(request, exc.status_code, exc.detail)
        return await http_exception_handler(request, exc)

    @app.exception_handler(DatabaseBusy)
    async def database_busy(request: Request, exc: DatabaseBusy):
        return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "5"})

    @app.exception_handler(TwilioCallError)
    async def twilio_call_error(request: Request, exc: TwilioCallError):
        if console_pages.wants_page(request, exc.http_status):
            return console_pages.error_page(request, exc.http_status, exc.message)
        return JSONResponse(status_code=exc.http_status, content=exc.body())

    @app.get("/health", responses=error_responses(503))
    async def health(request: Request):
        """200 while this process takes calls; 503 once it drains for a shutdown."""
        if request.app.state.drain.draining:
            return JSONResponse(status_code=503, content={"status": "draining"})
        return {"status": "ok"}

    @app.post(
        "/dialout",
        response_model=DialoutResponse,
        responses=error_responses(400, 401, 409, 429, 502, 503),
        dependencies=[Depends(require_api_key), Depends(require_calling_configured)],
    )
    async def dialout(body: DialoutRequest, request: Request, settings: SettingsDep, store: CallStoreDep):
        if request.app.state.drain.draining:
            raise HTTPException(
                503, "This server is shutting down; retry shortly (another instance may take the call)",
                headers={"Retry-After": str(RETRY_AFTER_SECS)},
            )
        config, variables = await build_call_config(body, settings, request.app.state.agents)
        if await request.app.state.do_not_call.get(config.to_number):
            raise HTTPException(409, f"{config.to_number} is on the do-not-call list; remove it there to call it")
        await store.create(config, variables=variables, metadata=body.metadata)
        request.app.state.greetings.prepare(config)
        try:
            call_sid = await make_twilio_call(request.app.state.twilio, settings, config)
        except TwilioCallError as e:
            await store.dial_refused(config.call_id, f"{e.message} (Twilio code {e.twilio_code})")
            logger.warning(f"Dial-out to {config.to_number} failed: {e.message} (Twilio code {e.twilio_code})")
            raise
        await store.dialed(config.call_id, call_sid)
        logger.info(f"Call {config.call_id} ({call_sid}) placed to {config.to_number}")
        return DialoutResponse(
            call_sid=call_sid, to_number=config.to_number, from_number=config.from_number, call_id=config.call_id
        )

    @app.post("/twiml", responses=error_responses(400, 403))
    async def twiml(request: Request, settings: SettingsDep, store: CallStoreDep, call_id: str = Query("")):
        form = await twilio_form(request, settings)
        call_sid = form.get("CallSid", "")
        config = await store.answered(call_id, call_sid)
        if config is None:
            logger.error(f"Twilio call {call_sid} asked for TwiML of unknown or ended call {call_id!r}; hanging up")
            return Response(hangup_twiml(), media_type="application/xml")
        secret = settings.secret("stream_secret")
        if not secret:  # /dialout refuses without it, so only a changed configuration gets here
            logger.error(f"STREAM_SECRET is not set: call {call_id} cannot be streamed; hanging up")
            return Response(hangup_twiml(), media_type="application/xml")
        token = issue_stream_token(
            secret,
            call_id=config.call_id,
            call_sid=call_sid,
            to_number=config.to_number,
            from_number=config.from_number,
            ttl_secs=settings.stream_token_ttl_secs,
        )
        twiml = generate_twiml(settings, config, token)
        if len(twiml) > TWIML_MAX_CHARS:
            logger.error(f"TwiML for call {call_id} is {len(twiml)} characters, over Twilio's {TWIML_MAX_CHARS}")
        return Response(twiml, media_type="application/xml")

    @app.websocket("/ws")
    async def media_stream(websocket: WebSocket):
        if twilio_signed_stream(websocket, settings):
            channel = Channel.PHONE
        elif browser_calls.console_socket(websocket, websocket.app.state.console_sessions, settings):
            channel = Channel.BROWSER
        else:
            logger.warning("Refused a media stream without a valid X-Twilio-Signature or console session")
            await websocket.close(code=1008)  # before accepting: the handshake answers 403
            return
        await websocket.accept()
        link = InProcessServerLink(websocket.app, channel)
        try:
            await bot.run_call(WebSocketRunnerArguments(websocket=websocket), settings, link)
        finally:
            await link.stream_closed()

    return app


def report_missing_settings(settings: Settings):
    missing = settings.missing_settings()
    if not missing:
        logger.info("All settings present")
        return
    lines = "\n".join(f"  - {names}: {consequence}" for names, consequence in missing)
    logger.warning(f"Missing settings (the server runs, without these features):\n{lines}")


def app_from_environment() -> FastAPI:
    """The app as each server process builds it: settings from the environment."""
    settings = Settings()
    bot.configure_logging(settings)
    return create_app(settings, handle_signals=True)


if __name__ == "__main__":
    try:
        settings = Settings()
    except ValidationError as e:
        raise SystemExit(f"Invalid settings (environment or .env):\n{e}")
    if errors := settings.startup_errors():
        raise SystemExit("; ".join(errors))
    uvicorn.run(
        "server:app_from_environment",
        factory=True,
        host="0.0.0.0",
        port=settings.port,
        workers=settings.workers,
        # Audio barely compresses; deflating every 20 ms packet costs CPU and latency.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECS,
    )
