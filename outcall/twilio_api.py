"""Twilio's side of the server, in one place: the non-blocking REST client and its errors,
placing and changing calls, the TwiML we answer with, and checking Twilio's signatures on
webhooks and on the media stream's handshake."""

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
from fastapi import HTTPException, Request, WebSocket
from loguru import logger
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client as TwilioClient
from twilio.twiml.voice_response import Connect, Stream, VoiceResponse

from outcall.calls import CallConfig
from outcall.settings import Settings

TWIML_MAX_CHARS = 4000  # Twilio's cap on inline TwiML
TIME_LIMIT_GRACE_SECS = 30  # Twilio's TimeLimit: its hard stop, this long after the bot's polite one


class TwilioCallError(Exception):
    """Twilio refused or could not be reached; carries what the API client should see."""

    def __init__(self, http_status: int, message: str, twilio_code: int | None = None):
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.twilio_code = twilio_code

    def body(self) -> dict[str, Any]:
        more_info = f"https://www.twilio.com/docs/errors/{self.twilio_code}" if self.twilio_code else None
        return {"detail": self.message, "twilio_code": self.twilio_code, "more_info": more_info}


def create_twilio_client(settings: Settings) -> TwilioClient:
    """A Twilio REST client that never blocks the event loop, aimed at TWILIO_API_BASE_URL."""
    client = TwilioClient(
        settings.twilio_account_sid,
        settings.secret("twilio_auth_token"),
        http_client=AsyncTwilioHttpClient(timeout=15),
    )
    client.api.base_url = settings.twilio_api_base_url.rstrip("/")
    return client


def webhook_url(settings: Settings, path: str, call_id: str) -> str:
    """One of our Twilio webhooks, naming the call so its record is found even before the CallSid."""
    return f"{settings.server_url}{path}?{urlencode({'call_id': call_id})}"


def twiml_url(settings: Settings, call_id: str) -> str:
    return webhook_url(settings, "/twiml", call_id)


async def make_twilio_call(client: TwilioClient, settings: Settings, config: CallConfig) -> str:
    """Ask Twilio to place the call; returns its CallSid. Twilio fetches /twiml on answer.

    Status callbacks report the call's progress to /twilio/status. With voicemail handling on,
    Twilio's asynchronous answering-machine detection runs alongside the conversation (a person
    is never kept waiting) and reports to /twilio/amd when a machine's greeting ends.
    """
    options: dict[str, Any] = {}
    if config.voicemail_action != "off":
        options.update(
            machine_detection="DetectMessageEnd",
            async_amd="true",
            async_amd_status_callback=webhook_url(settings, "/twilio/amd", config.call_id),
            async_amd_status_callback_method="POST",
        )
    if config.recording:
        options.update(
            record=True,
            recording_channels="dual",
            recording_status_callback=webhook_url(settings, "/twilio/recording", config.call_id),
            recording_status_callback_event=["completed"],
            recording_status_callback_method="POST",
        )
    try:
        twilio_call = await client.calls.create_async(
            to=config.to_number,
            from_=config.from_number,
            url=twiml_url(settings, config.call_id),
            method="POST",
            status_callback=webhook_url(settings, "/twilio/status", config.call_id),
            status_callback_event=["initiated", "ringing", "answered", "completed"],
            status_callback_method="POST",
            # Twilio's own hard stop, a little after the bot's polite one.
            time_limit=config.max_duration_secs + TIME_LIMIT_GRACE_SECS,
            **options,
        )
    except TwilioRestException as e:
        raise _twilio_call_error(e)
    except Exception as e:  # connection refused, DNS, timeout, TLS…
        logger.error(f"Twilio API unreachable: {type(e).__name__}: {e}")
        raise TwilioCallError(502, f"Twilio API unreachable ({type(e).__name__}); no call was placed")
    return twilio_call.sid


async def update_twilio_call(
    client: TwilioClient, call_sid: str, *, twiml: str | None = None, status: str | None = None
) -> None:
    """Change a live call: new TwiML (transfer, voicemail message) or a status (hang up)."""
    try:
        if twiml is not None:
            await client.calls(call_sid).update_async(twiml=twiml)
        else:
            await client.calls(call_sid).update_async(status=status)
    except TwilioRestException as e:
        raise _twilio_call_error(e)
    except Exception as e:
        logger.error(f"Twilio API unreachable: {type(e).__name__}: {e}")
        raise TwilioCallError(502, f"Twilio API unreachable ({type(e).__name__}); the call was not changed")


async def fetch_twilio_call(client: TwilioClient, call_sid: str):
    """Twilio's current view of a call (status, end_time, duration); TwilioCallError if it cannot say."""
    try:
        return await client.calls(call_sid).fetch_async()
    except TwilioRestException as e:
        raise _twilio_call_error(e)
    except Exception as e:
        raise TwilioCallError(502, f"Twilio API unreachable ({type(e).__name__})")


async def find_twilio_call(client: TwilioClient, to_number: str, from_number: str, since: datetime):
    """The call from `from_number` to `to_number` Twilio created at or after `since`, if any: how a
    dial whose response was lost (the server stopped mid-request) is found again."""
    try:
        calls = await client.calls.list_async(to=to_number, from_=from_number, limit=20)
    except TwilioRestException as e:
        raise _twilio_call_error(e)
    except Exception as e:
        raise TwilioCallError(502, f"Twilio API unreachable ({type(e).__name__})")
    # Twilio's timestamps have whole seconds.
    mine = [c for c in calls if c.date_created and c.date_created >= since.replace(microsecond=0)]
    return min(mine, key=lambda c: c.date_created) if mine else None


RECORDING_MAX_BYTES = 64 * 2**20  # a WAV of a little over an hour, both channels


async def fetch_recording(client: TwilioClient | None, recording_url: str) -> bytes:
    """A call's recording as WAV, fetched with the server's credentials (Twilio's recording URLs
    need them, and they must never reach a browser). TwilioCallError if it cannot be had."""
    if client is None:
        raise TwilioCallError(503, "Twilio is not configured: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
    auth = aiohttp.BasicAuth(client.username, client.password)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.get(f"{recording_url}.wav", auth=auth) as response:
                if response.status != 200:
                    raise TwilioCallError(502, f"Twilio would not give the recording (HTTP {response.status})")
                audio = await response.content.read(RECORDING_MAX_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as e:
        raise TwilioCallError(502, f"Twilio unreachable for the recording ({type(e).__name__})")
    if len(audio) > RECORDING_MAX_BYTES:
        raise TwilioCallError(502, "The recording is too long to play here; download it from Twilio's console")
    return audio


def _twilio_call_error(e: TwilioRestException) -> TwilioCallError:
    message = f"Twilio refused: {e.msg}"
    if e.status in (401, 403):
        # Our credentials, not the caller's request: an upstream failure.
        return TwilioCallError(502, f"Twilio rejected the server's credentials: {e.msg}", e.code)
    if e.status == 429:
        return TwilioCallError(429, message, e.code)
    if 400 <= e.status < 500:
        return TwilioCallError(400, message, e.code)
    return TwilioCallError(502, f"Twilio failed: {e.msg}", e.code)


def get_websocket_url(settings: Settings) -> str:
    """Where Twilio opens the media stream: this server, or Pipecat Cloud in production."""
    if settings.is_production:
        return settings.pipecat_cloud_ws_url
    base = settings.server_url or ""
    return re.sub(r"^http", "ws", base) + "/ws"


def hangup_twiml(message: str | None = None, voice: str | None = None) -> str:
    response = VoiceResponse()
    if message:
        response.say(message, voice=voice)
    response.hangup()
    return str(response)


def transfer_twiml(to_number: str, caller_id: str) -> str:
    """A cold transfer: connect the callee to `to_number`, showing our number as the caller."""
    response = VoiceResponse()
    response.dial(to_number, caller_id=caller_id, timeout=30)
    return str(response)


TRANSFER_RING_SECS = 20


def warm_transfer_twiml(settings: Settings, call_id: str, to_number: str, caller_id: str, hold_message: str) -> str:
    """A warm transfer: the callee hears `hold_message` while `to_number` rings; the person who
    answers hears the whisper (`<Number url>`, TwiML played to them alone before the calls are
    bridged) and may decline; the `<Dial action>` says how it went."""
    response = VoiceResponse()
    response.say(hold_message, voice=settings.voicemail_voice)
    dial = response.dial(
        caller_id=caller_id, timeout=TRANSFER_RING_SECS, action=webhook_url(settings, "/twilio/transfer-result", call_id)
    )
    dial.number(to_number, url=webhook_url(settings, "/twilio/whisper", call_id))
    return str(response)


def whisper_twiml(settings: Settings, call_id: str, whisper: str) -> str:
    """What the person taking a warm transfer hears: the whisper, then a key to accept (`<Gather>`);
    no key in time hangs their leg up, and the transfer counts as declined."""
    response = VoiceResponse()
    gather = response.gather(num_digits=1, timeout=6, action=webhook_url(settings, "/twilio/whisper-answer", call_id))
    gather.say(whisper, voice=settings.voicemail_voice)
    response.hangup()
    return str(response)


def stream_twiml(settings: Settings, config: CallConfig, stream_token: str) -> str:
    """`<Connect><Stream>` to the bot with the call's identifiers and stream token (see
    server_utils.generate_twiml)."""
    stream = Stream(url=get_websocket_url(settings))
    stream.parameter(name="call_id", value=config.call_id)
    stream.parameter(name="to_number", value=config.to_number)
    stream.parameter(name="from_number", value=config.from_number)
    stream.parameter(name="stream_token", value=stream_token)
    if settings.is_production:
        stream.parameter(name="_pipecatCloudServiceHost", value=f"{settings.agent_name}.{settings.organization_name}")
    connect = Connect()
    connect.append(stream)
    response = VoiceResponse()
    response.append(connect)
    return str(response)


def twilio_signed_stream(websocket: WebSocket, settings: Settings) -> bool:
    """Whether a media stream's handshake carries Twilio's signature: the stream URL from our
    TwiML (where Twilio connected), signed like a webhook with no parameters. Defence in depth
    beside the per-call stream token, for a bot running in this process."""
    auth_token = settings.secret("twilio_auth_token")
    signature = websocket.headers.get("X-Twilio-Signature", "")
    if not auth_token or not signature:
        return False
    return RequestValidator(auth_token).validate(get_websocket_url(settings), {}, signature)


async def twilio_form(request: Request, settings: Settings) -> dict[str, str]:
    """The webhook's form parameters, once X-Twilio-Signature proves Twilio sent them (else 403)."""
    auth_token = settings.secret("twilio_auth_token")
    if not auth_token or not settings.server_url:
        logger.error("Refusing a Twilio webhook: TWILIO_AUTH_TOKEN and SERVER_URL are needed to check it")
        raise HTTPException(403, "Twilio signature cannot be checked: the server lacks TWILIO_AUTH_TOKEN or SERVER_URL")
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:  # refused before the body is even parsed
        logger.warning(f"Rejected a request to {request.url.path} without a Twilio signature")
        raise HTTPException(403, "Invalid or missing X-Twilio-Signature")
    form = {key: str(value) for key, value in (await request.form()).items()}
    # Twilio signs the public URL it called, which differs from request.url behind ngrok.
    url = settings.server_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not RequestValidator(auth_token).validate(url, form, signature):
        logger.warning(f"Rejected a request to {request.url.path} with a missing or invalid Twilio signature")
        raise HTTPException(403, "Invalid or missing X-Twilio-Signature")
    return form
