"""The dial-out server: places calls through Twilio, answers Twilio's webhooks, hosts the bot.

    uv run server.py

Routes:
- POST /dialout                 start a call (API key)
- POST /twiml                   Twilio asks what to do with the answered call (Twilio signature)
- GET  /calls/{call_id}/config  a bot on Pipecat Cloud claims its call (stream token)
- WS   /ws                      Twilio's media stream, when the bot runs in this process
- GET  /health
"""

import hmac
import uuid
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from loguru import logger
from pipecat.runner.types import WebSocketRunnerArguments

import bot
from outcall import prompts
from outcall.calls import CallClaimError, CallConfig, CallRegistry, render_call_config
from outcall.settings import Settings
from outcall.stream_auth import issue_stream_token
from server_utils import (
    TWIML_MAX_CHARS,
    DialoutRequest,
    DialoutResponse,
    TwilioCallError,
    create_twilio_client,
    generate_twiml,
    hangup_twiml,
    make_twilio_call,
    twilio_form,
)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_registry(request: Request) -> CallRegistry:
    return request.app.state.calls


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[CallRegistry, Depends(get_registry)]


def require_api_key(request: Request, settings: SettingsDep) -> None:
    """Accept `X-API-Key: <key>` or `Authorization: Bearer <key>` matching DIALOUT_API_KEY."""
    expected = settings.secret("dialout_api_key")
    if not expected:
        raise HTTPException(503, "Dial-out is disabled: set DIALOUT_API_KEY on the server to enable it")
    given = request.headers.get("X-API-Key")
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if given is None and scheme.lower() == "bearer":
        given = credentials.strip()
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            401,
            "Missing or invalid API key: send X-API-Key: <key> or Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )


def require_calling_configured(settings: SettingsDep) -> None:
    missing = [
        name
        for name in ("SERVER_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "STREAM_SECRET")
        if not getattr(settings, name.lower())
    ]
    if missing:
        raise HTTPException(503, f"Calling is not configured: set {', '.join(missing)} on the server")


def build_call_config(request: DialoutRequest, settings: Settings) -> CallConfig:
    """Render the call's prompt and greeting now, so a missing value is a 422, not a mid-call surprise."""
    from_number = request.from_number or settings.twilio_phone_number
    if not from_number:
        raise _unprocessable("from_number", "from_number is required: the server has no TWILIO_PHONE_NUMBER default")
    try:
        return render_call_config(
            settings,
            call_id=str(uuid.uuid4()),
            to_number=request.to_number,
            from_number=from_number,
            variables=request.variables,
            prompt=request.prompt,
            greeting=request.greeting,
            wait_for_callee=request.wait_for_callee,
        )
    except prompts.TemplateError as e:
        raise _unprocessable(e.field, str(e))


def _unprocessable(field: str, message: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["body", field], "msg": message, "type": "value_error"}])


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    errors = settings.production_errors()
    if errors:
        raise RuntimeError("; ".join(errors))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        report_missing_settings(settings)
        app.state.twilio = create_twilio_client(settings) if settings.twilio_account_sid else None
        yield
        if app.state.twilio:
            await app.state.twilio.http_client.close()

    app = FastAPI(title="outcall", lifespan=lifespan)
    app.state.settings = settings
    app.state.calls = CallRegistry()

    @app.exception_handler(TwilioCallError)
    async def twilio_call_error(request: Request, exc: TwilioCallError):
        return JSONResponse(status_code=exc.http_status, content=exc.body())

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.post(
        "/dialout",
        response_model=DialoutResponse,
        dependencies=[Depends(require_api_key), Depends(require_calling_configured)],
    )
    async def dialout(body: DialoutRequest, request: Request, settings: SettingsDep, calls: RegistryDep):
        config = build_call_config(body, settings)
        calls.add(config)
        try:
            call_sid = await make_twilio_call(request.app.state.twilio, settings, config)
        except TwilioCallError as e:
            calls.forget(config.call_id)
            logger.warning(f"Dial-out to {config.to_number} failed: {e.message} (Twilio code {e.twilio_code})")
            raise
        logger.info(f"Call {config.call_id} ({call_sid}) placed to {config.to_number}")
        return DialoutResponse(
            call_sid=call_sid, to_number=config.to_number, from_number=config.from_number, call_id=config.call_id
        )

    @app.post("/twiml")
    async def twiml(request: Request, settings: SettingsDep, calls: RegistryDep, call_id: str = Query("")):
        form = await twilio_form(request, settings)
        call_sid = form.get("CallSid", "")
        config = calls.answered(call_id, call_sid)
        if config is None:
            logger.error(f"Twilio call {call_sid} asked for TwiML of unknown call {call_id!r}; hanging up")
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

    @app.get("/calls/{call_id}/config", response_model=CallConfig)
    async def call_config(call_id: str, request: Request, settings: SettingsDep, calls: RegistryDep):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        secret = settings.secret("stream_secret")
        if scheme.lower() != "bearer" or not token or not secret:
            raise HTTPException(401, "Send the call's stream token as Authorization: Bearer <token>")
        try:
            return await calls.claim(call_id, token.strip(), secret)
        except CallClaimError as e:
            logger.warning(f"Refused call config for {call_id}: {e.reason}")
            raise HTTPException(e.status, e.reason)

    @app.websocket("/ws")
    async def media_stream(websocket: WebSocket):
        await websocket.accept()
        claim = partial(websocket.app.state.calls.claim, secret=settings.secret("stream_secret") or "")
        await bot.run_call(WebSocketRunnerArguments(websocket=websocket), settings, claim)

    return app


def report_missing_settings(settings: Settings):
    missing = settings.missing_settings()
    if not missing:
        logger.info("All settings present")
        return
    lines = "\n".join(f"  - {names}: {consequence}" for names, consequence in missing)
    logger.warning(f"Missing settings (the server runs, without these features):\n{lines}")


if __name__ == "__main__":
    settings = Settings()
    bot.configure_logging(settings)
    uvicorn.run(create_app(settings), host="0.0.0.0", port=settings.port)
