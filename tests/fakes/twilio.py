"""A Twilio emulator: the Calls REST API, TwiML webhooks and Media Streams, on 127.0.0.1.

It follows Twilio's protocol where our code can observe it:
- REST: `POST /2010-04-01/Accounts/{AC}/Calls.json` (create), `POST …/Calls/{CA}.json` (update),
  `GET …/Calls/{CA}.json` (fetch), `GET …/Calls.json?To=&From=` (list, newest first), HTTP
  Basic auth, Twilio's JSON shapes and error bodies (`code`, `message`, `more_info`, `status`).
  It counts simultaneous calls (`max_simultaneous`, from create to final status), and can lose
  a create request or its response (`create_faults`) as a dropped connection would.
- On answer it POSTs the call's form parameters to the TwiML URL with a correct
  `X-Twilio-Signature`, parses the TwiML and runs its verbs (`Connect/Stream`, `Say`, `Pause`,
  `Hangup`). A non-200 or unparsable answer is Twilio's error 11200/12100: the call ends.
- Call progress: `initiated`, `ringing`, then answered (`in-progress`) or busy / no-answer /
  failed, each sent to `StatusCallback` (for the events in `StatusCallbackEvent`) as a signed
  form with Twilio's `Timestamp` and `SequenceNumber`. Callbacks are delivered independently,
  as Twilio does; a failed delivery (connection error or 5xx) is retried once. Tests can make
  them arrive late (`callback_delays`), twice (`duplicate_callbacks`) or never (`lost_callbacks`). What happens to a
  number is set in `answer_as` (human, busy, no-answer, failed, or an answering machine).
- Asynchronous answering-machine detection (`MachineDetection=DetectMessageEnd`, `AsyncAmd`):
  `AnsweredBy` posted to `AsyncAmdStatusCallback` (for a machine, when its greeting ends).
- Recording (`Record=true`): a `completed` recording callback when the call ends; the
  recording's URL serves a dual-channel WAV (callee left, bot right) with Basic auth, as
  Twilio's `{RecordingUrl}.wav` does.
- Updating a live call with `Twiml` stops the stream and runs the new TwiML (`Say`, `Dial`,
  `Hangup`); `Status=completed` hangs up, `Status=canceled` cancels a call not yet answered.
- `<Connect><Stream>`: opens the WebSocket (the handshake signed with `X-Twilio-Signature` over
  the stream URL, as Twilio signs it) and sends `connected`, `start` (with the
  `<Parameter>`s as `customParameters`), then a `media` message of 160 bytes of μ-law every
  20 ms, as a real phone line does; it records the bot's `media`, `clear` and `mark`, and echoes
  each mark once the audio before it has played. Hanging up (REST `Status=completed`, or the
  callee) sends `stop` and closes the socket. When the bot closes the socket, the call
  continues with the next verb, as `<Connect>` does.

A test scripts the person who answers with `emulator.callee = async def callee(call): …`.
"""

import asyncio
import base64
import io
import json
import secrets
import time
import wave
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import numpy as np
import phonenumbers
import websockets
from aiohttp import web
from twilio.request_validator import RequestValidator

from tests.fakes.audio import FRAME_BYTES, ULAW_SILENCE, frames, rms, ulaw_to_pcm
from tests.fakes.http import serve

API = "/2010-04-01/Accounts/{account_sid}/Calls"
VOICED_RMS = 200  # a bot media frame louder than this is speech, not silence


def _error(status: int, code: int, message: str) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status)


async def _until_client_gives_up(request: web.Request) -> None:
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(0.05)


@dataclass
class BotAudio:
    """One media message the bot sent: when it arrived, how loud it was, how long it plays and
    when it starts playing (after the audio Twilio had buffered before it)."""

    at: float
    rms: float
    seconds: float = 0.02
    plays_at: float = 0.0


@dataclass
class Utterance:
    """When the callee's first and last voiced frames of one `say()` went out on the line."""

    first_voiced_at: float | None = None
    last_voiced_at: float | None = None


@dataclass
class EmulatedCall:
    """One call placed through the emulator: its state and everything that crossed the line."""

    sid: str
    account_sid: str
    to: str
    from_: str
    url: str
    method: str
    time_limit: int | None
    status_callback: str | None = None
    status_callback_events: list[str] = field(default_factory=list)
    amd_callback: str | None = None
    recording_callback: str | None = None
    record: bool = False
    answered_by: str | None = None
    status: str = "queued"
    created_at: float = field(default_factory=time.monotonic)
    created_wall: float = field(default_factory=time.time)
    ended_wall: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    twiml: str | None = None
    said: list[str] = field(default_factory=list)
    stream_url: str | None = None
    stream_sid: str | None = None
    custom_parameters: dict[str, str] = field(default_factory=dict)
    stream_started_at: float | None = None
    stream_close_code: int | None = None
    stream_error: str | None = None
    bot_audio: list[BotAudio] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)
    updates: list[dict[str, str]] = field(default_factory=list)
    dialed: list[dict[str, str]] = field(default_factory=list)
    callbacks: list["Callback"] = field(default_factory=list)
    hangup_requested_at: float | None = None
    callee_error: BaseException | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    stream_closed: asyncio.Event = field(default_factory=asyncio.Event)
    _speech: asyncio.Queue = field(default_factory=asyncio.Queue)
    _ws: websockets.ClientConnection | None = None
    _hangup: asyncio.Event = field(default_factory=asyncio.Event)
    _redirect: asyncio.Event = field(default_factory=asyncio.Event)
    _next_twiml: ET.Element | None = None
    _callback_tasks: list[asyncio.Task] = field(default_factory=list)
    _sequence: int = 0
    _recorded: dict[str, bytearray] = field(default_factory=lambda: {"callee": bytearray(), "bot": bytearray()})
    played_until: float = 0.0  # when the bot audio Twilio has buffered finishes playing
    stream_closed_at: float | None = None
    _bot_voice: asyncio.Event = field(default_factory=asyncio.Event)
    _voice_heard_until: float = 0.0  # when the last voiced audio finishes playing

    # --- what a scripted callee can do -------------------------------------------------------

    async def say(self, ulaw: bytes) -> Utterance:
        """Speak: the audio replaces line silence, 20 ms a message, in real time."""
        done = asyncio.get_running_loop().create_future()
        chunks = frames(ulaw)
        voiced = [rms(ulaw_to_pcm(chunk)) > VOICED_RMS for chunk in chunks]
        utterance = Utterance()
        await self._speech.put((list(zip(chunks, voiced)), utterance, done))
        await done
        return utterance

    async def wait_for_bot_to_speak(self, timeout: float = 10, quiet: float = 0.5) -> float:
        """Wait until the bot has spoken and the callee has then heard `quiet` seconds of quiet.

        The bot may send audio faster than real time (Twilio buffers it): the quiet starts when
        its last voiced audio has played. Returns the seconds from this call to the bot's first
        voiced frame.
        """
        start = time.monotonic()
        self._bot_voice.clear()
        await asyncio.wait_for(self._bot_voice.wait(), timeout)
        first_voice = time.monotonic() - start
        while time.monotonic() - self._voice_heard_until < quiet:
            if time.monotonic() - start > timeout:
                raise TimeoutError("the bot kept talking")
            await asyncio.sleep(0.02)
        return first_voice

    async def hang_up(self) -> None:
        """The callee puts the phone down."""
        self._hangup.set()
        await self.ended.wait()

    async def press(self, digits: str) -> None:
        """The callee presses keys: one `dtmf` message each, as Twilio sends them."""
        for digit in digits:
            await self._ws.send(json.dumps({"event": "dtmf", "streamSid": self.stream_sid,
                                            "sequenceNumber": "0",
                                            "dtmf": {"track": "inbound_track", "digit": digit}}))
            await asyncio.sleep(0.1)

    async def settled(self, timeout: float = 20) -> None:
        """Wait until the call has ended and every callback about it has been delivered."""
        await asyncio.wait_for(self.ended.wait(), timeout)
        while not all(t.done() for t in self._callback_tasks):
            await asyncio.wait(self._callback_tasks, timeout=timeout)

    def callback_statuses(self) -> list[str]:
        """CallStatus of each status callback our server accepted, in the order it got them."""
        return [c.params["CallStatus"] for c in self.callbacks if c.kind == "status" and c.response_status == 204]

    # --- what a test can read ----------------------------------------------------------------

    def voiced_seconds(self) -> float:
        """Seconds of speech the bot sent."""
        return sum(a.seconds for a in self.bot_audio if a.rms > VOICED_RMS)

    def heard_seconds(self) -> float:
        """Seconds of the bot's speech the callee heard: a `clear` or the end of the stream
        drops what Twilio had buffered and not yet played."""
        cut_offs = sorted(self.clears) + [self.stream_closed_at or float("inf")]
        heard = 0.0
        for a in self.bot_audio:
            if a.rms > VOICED_RMS:
                stop = next((c for c in cut_offs if c >= a.plays_at), a.plays_at)  # else: after hang-up
                heard += min(a.plays_at + a.seconds, stop) - a.plays_at
        return heard

    def first_voiced_at(self, after: float = float("-inf")) -> float | None:
        """When the bot's first voiced frame (after `after`, if given) arrived."""
        return next((a.at for a in self.bot_audio if a.at > after and a.rms > VOICED_RMS), None)

    def last_voiced_at(self) -> float | None:
        return next((a.at for a in reversed(self.bot_audio) if a.rms > VOICED_RMS), None)

    def resource(self) -> dict:
        """The Call resource as Twilio's REST API returns it."""
        duration = None
        if self.answered_at and self.ended_at:
            duration = str(int(self.ended_at - self.answered_at))
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "status": self.status,
            "direction": "outbound-api",
            "duration": duration,
            "answered_by": self.answered_by,
            "parent_call_sid": None,
            "date_created": formatdate(self.created_wall, usegmt=True),
            "date_updated": formatdate(usegmt=True),
            "start_time": formatdate(self.created_wall, usegmt=True),
            "end_time": formatdate(self.ended_wall, usegmt=True) if self.ended_wall else None,
            "price": None,
            "price_unit": "USD",
            "uri": f"{API.format(account_sid=self.account_sid)}/{self.sid}.json",
            "subresource_uris": {},
        }


@dataclass
class Callback:
    """One webhook delivery attempt: what was sent, and how our server answered."""

    kind: str  # status, amd, recording
    params: dict[str, str]
    response_status: int | None  # None: the connection failed


Callee = Callable[[EmulatedCall], Awaitable[None]]
FINAL = ("completed", "busy", "no-answer", "failed", "canceled")
MACHINES = ("machine_end_beep", "machine_end_silence", "machine_end_other", "fax")


class TwilioEmulator:
    """Twilio's REST API and voice network, for one account, on 127.0.0.1."""

    def __init__(self, account_sid: str, auth_token: str, owned_numbers: set[str]):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.owned_numbers = owned_numbers
        self.calls: dict[str, EmulatedCall] = {}
        self.callee: Callee | None = None
        # What happens when a number is called: "human" (the default), "busy", "no-answer",
        # "failed", or an answering machine ("machine_end_beep", "machine_end_silence", …).
        self.answer_as: dict[str, str] = {}
        self.answer_default = "human"  # what happens to numbers not in answer_as
        self.ring_secs = 0.05  # how long a phone rings before it is answered
        self.no_answer_secs = 0.3  # how long it rings before Twilio gives up (Timeout)
        self.amd_secs = 0.5  # how long answering-machine detection listens before its verdict
        self.dial_secs = 0.3  # how long a transferred call (<Dial>) lasts
        # How the person a <Dial> rings takes it: "accept" (the default; presses 1 when a whisper
        # asks), "decline" (hears the whisper, presses nothing), "no-answer" or "busy".
        self.dialed_person: dict[str, str] = {}
        # What goes wrong when a number is dialed: "request-lost" (the create request hangs and
        # no call is placed) or "response-lost" (the call is placed, the response never comes).
        self.create_faults: dict[str, str] = {}
        self.active_calls = 0  # calls created and not yet ended…
        self.max_simultaneous = 0  # …and the most there ever were at once
        self.callback_delays: dict[str, float] = {}  # CallStatus → extra seconds before delivery
        self.duplicate_callbacks = False  # deliver every status callback twice
        self.lost_callbacks: set[str] = set()  # CallStatus values whose callback never gets through
        # Errors Twilio answers the next requests for new TwiML with, in order: (HTTP status, code, message).
        self.redirect_errors: list[tuple[int, int, str]] = []
        # Name resolution for stream hosts, like /etc/hosts: {"api.pipecat.daily.co": "127.0.0.1:8123"}.
        # A mapped wss:// URL is opened as plain ws:// on the local address.
        self.hosts: dict[str, str] = {}
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task] = set()
        self.recordings: dict[str, EmulatedCall] = {}  # RecordingSid → its call
        self.rest_requests: list[str] = []  # "METHOD /path" of every REST request received
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> "TwilioEmulator":
        app = web.Application(middlewares=[self._log_request])
        base = API.format(account_sid="{account_sid}")
        app.router.add_post(f"{base}.json", self._create_call)
        app.router.add_get(f"{base}.json", self._list_calls)
        app.router.add_post(f"{base}/{{sid}}.json", self._update_call)
        app.router.add_get(f"{base}/{{sid}}.json", self._fetch_call)
        app.router.add_get("/2010-04-01/Accounts/{account_sid}/Recordings/{sid}.wav", self._fetch_recording)
        self._runner, self.base_url = await serve(app)
        self._http = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http:
            await self._http.close()
        if self._runner:
            await self._runner.cleanup()

    @web.middleware
    async def _log_request(self, request: web.Request, handler) -> web.StreamResponse:
        self.rest_requests.append(f"{request.method} {request.path}")
        return await handler(request)

    def only_call(self) -> EmulatedCall:
        assert len(self.calls) == 1, f"expected one call, emulator has {len(self.calls)}"
        return next(iter(self.calls.values()))

    # --- REST --------------------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        credentials = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if auth != f"Basic {credentials}" or request.match_info["account_sid"] != self.account_sid:
            return _error(401, 20003, "Authenticate")
        return None

    async def _create_call(self, request: web.Request) -> web.Response:
        if denied := self._authenticate(request):
            return denied
        form = await request.post()
        to, from_, url = form.get("To"), form.get("From"), form.get("Url")
        if not to:
            return _error(400, 21201, "No 'To' number is specified")
        if not from_:
            return _error(400, 21213, "No 'From' number is specified")
        if not url:
            return _error(400, 21205, "Url parameter is required.")
        try:
            valid_to = phonenumbers.is_valid_number(phonenumbers.parse(to, None))
        except phonenumbers.NumberParseException:
            valid_to = False
        if not valid_to:
            return _error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if from_ not in self.owned_numbers:
            return _error(
                400, 21210, f"The source phone number provided, {from_}, is not yet verified for your account."
            )
        fault = self.create_faults.get(to)
        if fault == "request-lost":
            await _until_client_gives_up(request)
            return web.Response(status=504)  # nobody is listening; no call was placed
        call = EmulatedCall(
            sid="CA" + secrets.token_hex(16),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            url=url,
            method=form.get("Method", "POST"),
            time_limit=int(form["TimeLimit"]) if "TimeLimit" in form else None,
            status_callback=form.get("StatusCallback"),
            # Twilio's default when a StatusCallback is given without events: only `completed`.
            status_callback_events=form.getall("StatusCallbackEvent", ["completed"]),
            amd_callback=form.get("AsyncAmdStatusCallback") if form.get("MachineDetection") else None,
            recording_callback=form.get("RecordingStatusCallback"),
            record=form.get("Record", "false").lower() == "true",
        )
        self.calls[call.sid] = call
        self.active_calls += 1
        self.max_simultaneous = max(self.max_simultaneous, self.active_calls)
        self._spawn(self._run_call(call))
        if fault == "response-lost":
            await _until_client_gives_up(request)
        return web.json_response(call.resource(), status=201)

    async def _list_calls(self, request: web.Request) -> web.Response:
        """Calls, newest first, filtered by `To` and `From` as Twilio's list does (one page)."""
        if denied := self._authenticate(request):
            return denied
        to, from_ = request.query.get("To"), request.query.get("From")
        page_size = int(request.query.get("PageSize", "50"))
        found = [
            c for c in sorted(self.calls.values(), key=lambda c: c.created_at, reverse=True)
            if (not to or c.to == to) and (not from_ or c.from_ == from_)
        ][:page_size]
        uri = f"{API.format(account_sid=self.account_sid)}.json"
        return web.json_response({
            "calls": [c.resource() for c in found], "end": len(found) - 1, "first_page_uri": uri,
            "next_page_uri": None, "page": 0, "page_size": page_size, "previous_page_uri": None,
            "start": 0, "uri": uri,
        })

    def _find(self, request: web.Request) -> EmulatedCall | web.Response:
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        return call

    async def _fetch_call(self, request: web.Request) -> web.Response:
        if denied := self._authenticate(request):
            return denied
        call = self._find(request)
        return call if isinstance(call, web.Response) else web.json_response(call.resource())

    async def _fetch_recording(self, request: web.Request) -> web.Response:
        if denied := self._authenticate(request):
            return denied
        call = self.recordings.get(request.match_info["sid"])
        if call is None:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        callee, bot = (ulaw_to_pcm(bytes(call._recorded[track])) for track in ("callee", "bot"))
        length = max(len(callee), len(bot))
        stereo = np.zeros((length, 2), dtype=np.int16)
        stereo[: len(callee), 0], stereo[: len(bot), 1] = callee, bot
        wav = io.BytesIO()
        with wave.open(wav, "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(8000)
            out.writeframes(stereo.tobytes())
        return web.Response(body=wav.getvalue(), content_type="audio/x-wav")

    async def _update_call(self, request: web.Request) -> web.Response:
        if denied := self._authenticate(request):
            return denied
        call = self._find(request)
        if isinstance(call, web.Response):
            return call
        form = dict(await request.post())
        call.updates.append(form)
        status = form.get("Status")
        if status in ("completed", "canceled"):
            call.hangup_requested_at = call.hangup_requested_at or time.monotonic()
            answered = call.status == "in-progress"
            # `canceled` only ends calls not yet answered; `completed` ends any live call.
            if call.status not in FINAL and (status == "completed" or not answered):
                call._hangup.set()
            return web.json_response(call.resource())
        if "Twiml" in form or "Url" in form:
            if call.status != "in-progress":
                return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
            if self.redirect_errors:
                return _error(*self.redirect_errors.pop(0))
            if "Url" in form:
                return _error(400, 21205, "The emulator runs inline Twiml only")
            try:
                call._next_twiml = ET.fromstring(form["Twiml"])
            except ET.ParseError:
                return _error(400, 12100, "Document parse failure")
            call._redirect.set()
            return web.json_response(call.resource())
        return _error(400, 20001, "Nothing to update: give Status, Twiml or Url")

    # --- the voice network -------------------------------------------------------------------

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_call(self, call: EmulatedCall) -> None:
        behaviour = self.answer_as.get(call.to, self.answer_default)
        final = "completed"
        try:
            self._set_status(call, "initiated")
            if behaviour in ("busy", "failed"):
                final = behaviour
                return
            self._set_status(call, "ringing")
            ringing = self.no_answer_secs if behaviour == "no-answer" else self.ring_secs
            if await self._wait_or_hangup(call, ringing):
                final = "canceled"
                return
            if behaviour == "no-answer":
                final = "no-answer"
                return
            call.answered_at = time.monotonic()
            self._set_status(call, "in-progress", event="answered")
            if call.amd_callback:
                self._spawn(self._detect_machine(call, behaviour))
            twiml = await self._fetch_twiml(call)
            while twiml is not None and not call._hangup.is_set():
                twiml = await self._execute(call, twiml)
        finally:
            call.ended_at, call.ended_wall = time.monotonic(), time.time()
            self.active_calls -= 1
            self._set_status(call, final)
            if call.record and call.answered_at and call.recording_callback:
                self._send_recording(call)
            call.ended.set()

    def _set_status(self, call: EmulatedCall, status: str, event: str | None = None) -> None:
        call.status = status
        event = event or ("completed" if status in FINAL else status)
        if not call.status_callback or event not in call.status_callback_events:
            return
        call._sequence += 1
        params = self._call_params(call) | {
            "CallStatus": status,
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(call._sequence - 1),
            "Timestamp": formatdate(usegmt=True),
        }
        if status in FINAL:
            duration = int(call.ended_at - call.answered_at) if call.answered_at else 0
            params |= {"CallDuration": str(duration), "Duration": str(max(1, (duration + 59) // 60))}
            if call.answered_by:
                params["AnsweredBy"] = call.answered_by
        if status in self.lost_callbacks:
            call.callbacks.append(Callback("status", params, None))
            return
        copies = 2 if self.duplicate_callbacks else 1
        for _ in range(copies):
            self._callback(call, "status", call.status_callback, params, self.callback_delays.get(status, 0))

    async def _detect_machine(self, call: EmulatedCall, behaviour: str) -> None:
        """Async AMD: a person is recognised quickly; a machine when its greeting ends."""
        await asyncio.sleep(self.amd_secs if behaviour in MACHINES else self.amd_secs / 2)
        call.answered_by = behaviour if behaviour in MACHINES else "human"
        duration = str(int((time.monotonic() - call.answered_at) * 1000))
        params = self._call_params(call) | {"AnsweredBy": call.answered_by, "MachineDetectionDuration": duration}
        self._callback(call, "amd", call.amd_callback, params)

    def _send_recording(self, call: EmulatedCall) -> None:
        recording_sid = "RE" + secrets.token_hex(16)
        self.recordings[recording_sid] = call
        params = {
            "AccountSid": call.account_sid,
            "CallSid": call.sid,
            "RecordingSid": recording_sid,
            "RecordingUrl": f"{self.base_url}/2010-04-01/Accounts/{call.account_sid}/Recordings/{recording_sid}",
            "RecordingStatus": "completed",
            "RecordingDuration": str(int(call.ended_at - call.answered_at)),
            "RecordingChannels": "2",
            "RecordingSource": "OutboundAPI",
            "RecordingStartTime": formatdate(usegmt=True),
        }
        self._callback(call, "recording", call.recording_callback, params)

    def _call_params(self, call: EmulatedCall) -> dict[str, str]:
        return {
            "AccountSid": call.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call.sid,
            "CallStatus": call.status,
            "Called": call.to,
            "Caller": call.from_,
            "Direction": "outbound-api",
            "From": call.from_,
            "To": call.to,
        }

    def _callback(self, call: EmulatedCall, kind: str, url: str, params: dict[str, str], delay: float = 0) -> None:
        call._callback_tasks.append(self._spawn(self._deliver(call, kind, url, params, delay)))

    async def _deliver(self, call: EmulatedCall, kind: str, url: str, params: dict[str, str], delay: float) -> None:
        """POST a signed webhook; retry once after a connection failure or a 5xx, as Twilio does."""
        await asyncio.sleep(delay)
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        for attempt in range(2):
            try:
                async with self._http.post(url, data=params, headers={"X-Twilio-Signature": signature}) as r:
                    status = r.status
            except aiohttp.ClientError:
                status = None
            call.callbacks.append(Callback(kind, params, status))
            if status is not None and status < 500:
                return
            await asyncio.sleep(0.5)

    async def _fetch_twiml(self, call: EmulatedCall) -> ET.Element | None:
        params = self._call_params(call)
        signature = RequestValidator(self.auth_token).compute_signature(call.url, params)
        async with self._http.post(call.url, data=params, headers={"X-Twilio-Signature": signature}) as r:
            body = await r.text()
            if r.status != 200:
                call.stream_error = f"11200: TwiML URL answered HTTP {r.status}"
                return None
        call.twiml = body
        try:
            return ET.fromstring(body)
        except ET.ParseError:
            call.stream_error = "12100: Document parse failure"
            return None

    async def _execute(self, call: EmulatedCall, response: ET.Element) -> ET.Element | None:
        """Run TwiML verbs in order; returns new TwiML if the call was updated meanwhile."""
        for verb in response:
            if call._hangup.is_set():
                return None
            if call._redirect.is_set():
                break
            if verb.tag == "Say":
                call.said.append(verb.text or "")
            elif verb.tag == "Pause":
                await self._wait_or_hangup(call, float(verb.get("length", "1")))
            elif verb.tag == "Hangup":
                return None
            elif verb.tag == "Dial":
                follow_up = await self._dial(call, verb)
                if follow_up is not None:  # the <Dial action>'s TwiML replaces the rest of this document
                    return follow_up
            elif verb.tag == "Connect":
                stream = verb.find("Stream")
                if stream is not None:
                    await self._run_stream(call, stream)
        if call._redirect.is_set():
            call._redirect.clear()
            twiml, call._next_twiml = call._next_twiml, None
            return twiml
        return None

    async def _dial(self, call: EmulatedCall, verb: ET.Element) -> ET.Element | None:
        """`<Dial>`: ring the number; if `<Number url>` is set, play that TwiML to the person who
        answers before bridging (its `<Say>` heard by them alone, a `<Gather>` taking their key,
        `<Hangup>` ending their leg); then, with `action`, POST DialCallStatus and return its TwiML."""
        number_element = verb.find("Number")
        number = ((number_element.text if number_element is not None else verb.text) or "").strip()
        dial = {"number": number, "callerId": verb.get("callerId", call.from_), "whispered": [], "bridged": False}
        call.dialed.append(dial)
        person = self.dialed_person.get(number, "accept")
        child_sid = "CA" + secrets.token_hex(16)
        status, duration = person, 0
        if person not in ("no-answer", "busy"):
            bridged = True
            whisper_url = number_element.get("url") if number_element is not None else None
            if whisper_url:
                params = {**self._call_params(call), "CallSid": child_sid, "ParentCallSid": call.sid, "To": number}
                bridged = await self._whisper(call, dial, whisper_url, params, person)
            status = "completed"
            if bridged:
                dial["bridged"] = True
                await self._wait_or_hangup(call, self.dial_secs)
                duration = max(1, round(self.dial_secs))
        else:
            await self._wait_or_hangup(call, min(self.dial_secs, float(verb.get("timeout", "30"))))
        action = verb.get("action")
        if not action or call._hangup.is_set():
            return None
        params = {**self._call_params(call), "DialCallStatus": status, "DialCallSid": child_sid,
                  "DialCallDuration": str(duration)}
        return await self._request_twiml(call, action, params)

    async def _whisper(self, call: EmulatedCall, dial: dict, url: str, params: dict[str, str], person: str) -> bool:
        """Run the whisper TwiML on the dialed person's leg; True if the calls are then bridged."""
        twiml = await self._request_twiml(call, url, params)
        while twiml is not None:
            next_twiml = None
            for verb in twiml:
                if verb.tag == "Hangup":
                    return False
                for say in [verb] if verb.tag == "Say" else verb.findall("Say") if verb.tag == "Gather" else []:
                    dial["whispered"].append(say.text or "")
                if verb.tag == "Gather":
                    digits = "1" if person == "accept" else ""
                    if digits:  # without a key, Twilio goes on to the next verb
                        next_twiml = await self._request_twiml(call, verb.get("action"), {**params, "Digits": digits})
                        break
            if next_twiml is None:
                return True  # the whisper ran to its end: Twilio bridges the calls
            twiml = next_twiml
        return False

    async def _request_twiml(self, call: EmulatedCall, url: str, params: dict[str, str]) -> ET.Element | None:
        """POST a signed form to one of the application's TwiML URLs, as Twilio does; its TwiML."""
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        async with self._http.post(url, data=params, headers={"X-Twilio-Signature": signature}) as r:
            body = await r.text()
            if r.status != 200:
                call.stream_error = f"11200: {url} answered HTTP {r.status}"
                return None
        try:
            return ET.fromstring(body)
        except ET.ParseError:
            call.stream_error = "12100: Document parse failure"
            return None

    async def _wait_or_hangup(self, call: EmulatedCall, seconds: float) -> bool:
        """Wait `seconds` unless the call is hung up or updated first; True if it was hung up."""
        events = [asyncio.ensure_future(call._hangup.wait()), asyncio.ensure_future(call._redirect.wait())]
        await asyncio.wait(events, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for event in events:
            event.cancel()
        return call._hangup.is_set()

    async def _run_stream(self, call: EmulatedCall, stream: ET.Element) -> None:
        call.stream_url = stream.get("url")
        call.custom_parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        call.stream_sid = "MZ" + secrets.token_hex(16)
        try:
            # Twilio signs the handshake like a webhook: the stream URL, no parameters.
            signature = RequestValidator(self.auth_token).compute_signature(call.stream_url, {})
            ws = await websockets.connect(
                self._resolve(call.stream_url), max_size=None, additional_headers={"X-Twilio-Signature": signature}
            )
        except (OSError, websockets.InvalidHandshake) as e:
            call.stream_error = f"31920: stream connection failed: {e}"
            return
        call._ws = ws
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(
            json.dumps(
                {
                    "event": "start",
                    "sequenceNumber": "1",
                    "streamSid": call.stream_sid,
                    "start": {
                        "accountSid": call.account_sid,
                        "streamSid": call.stream_sid,
                        "callSid": call.sid,
                        "tracks": ["inbound"],
                        "customParameters": call.custom_parameters,
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    },
                }
            )
        )
        call.stream_started_at = time.monotonic()
        receiving = self._spawn(self._receive(call, ws))
        sending = self._spawn(self._send_media(call, ws))
        # The callee is the one scripted when the call connected, even if a test scripts another
        # before this task first runs.
        callee = self._spawn(self._run_callee(call, self.callee)) if self.callee else None
        hangup = asyncio.ensure_future(call._hangup.wait())
        redirect = asyncio.ensure_future(call._redirect.wait())
        await asyncio.wait([receiving, hangup, redirect], return_when=asyncio.FIRST_COMPLETED)
        redirect.cancel()
        if (call._hangup.is_set() or call._redirect.is_set()) and ws.state is websockets.State.OPEN:
            try:
                await ws.send(json.dumps({"event": "stop", "sequenceNumber": "0", "streamSid": call.stream_sid,
                                          "stop": {"accountSid": call.account_sid, "callSid": call.sid}}))
            except websockets.ConnectionClosed:
                pass
        await ws.close()
        for task in (hangup, sending, receiving, callee):
            if task:
                task.cancel()
        await asyncio.gather(receiving, sending, return_exceptions=True)
        call.stream_close_code = ws.close_code
        call.stream_closed_at = time.monotonic()
        call.stream_closed.set()

    def _resolve(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.hostname in self.hosts:
            return urlunsplit(("ws", self.hosts[parts.hostname], parts.path, parts.query, ""))
        return url

    async def _run_callee(self, call: EmulatedCall, callee: Callee) -> None:
        try:
            await callee(call)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # surfaced to the test through call.callee_error
            call.callee_error = e

    async def _send_media(self, call: EmulatedCall, ws) -> None:
        """One 20 ms frame every 20 ms: the callee's speech when they talk, else line silence."""
        sequence, chunk, start = 2, 1, time.monotonic()
        speech: list[tuple[bytes, bool]] = []
        utterance: Utterance | None = None
        done: asyncio.Future | None = None
        while True:
            if not speech and done is not None:
                done.set_result(None)
                done = None
            if not speech and not call._speech.empty():
                speech, utterance, done = call._speech.get_nowait()
            payload, voiced = speech.pop(0) if speech else (ULAW_SILENCE, False)
            message = {
                "event": "media",
                "sequenceNumber": str(sequence),
                "streamSid": call.stream_sid,
                "media": {
                    "track": "inbound",
                    "chunk": str(chunk),
                    "timestamp": str((chunk - 1) * 20),
                    "payload": base64.b64encode(payload).decode(),
                },
            }
            try:
                await ws.send(json.dumps(message))
            except websockets.ConnectionClosed:
                return
            if call.record:
                call._recorded["callee"] += payload
            if voiced:
                utterance.last_voiced_at = time.monotonic()
                utterance.first_voiced_at = utterance.first_voiced_at or utterance.last_voiced_at
            sequence, chunk = sequence + 1, chunk + 1
            await asyncio.sleep(max(0.0, start + (chunk - 1) * 0.02 - time.monotonic()))

    async def _receive(self, call: EmulatedCall, ws) -> None:
        """Record what the bot sends; echo marks when the audio queued before them has played."""
        pending_marks: list[tuple[float, str]] = []
        async for raw in ws:
            now = time.monotonic()
            message = json.loads(raw)
            event = message.get("event")
            if message.get("streamSid") != call.stream_sid:
                continue  # Twilio ignores messages for another stream
            if event == "media":
                payload = base64.b64decode(message["media"]["payload"])
                if call.record:
                    call._recorded["bot"] += payload
                level = rms(ulaw_to_pcm(payload))
                seconds = len(payload) / FRAME_BYTES * 0.02
                plays_at = max(call.played_until, now)
                call.bot_audio.append(BotAudio(now, level, seconds, plays_at))
                call.played_until = plays_at + seconds
                if level > VOICED_RMS:
                    call._voice_heard_until = call.played_until
                    call._bot_voice.set()
            elif event == "clear":
                call.clears.append(now)
                call.played_until = now
            elif event == "mark":
                pending_marks.append((call.played_until, message["mark"]["name"]))
            due = [m for m in pending_marks if m[0] <= now or event == "clear"]
            for m in due:
                pending_marks.remove(m)
                call.marks.append(m[1])
                await ws.send(json.dumps({"event": "mark", "streamSid": call.stream_sid, "mark": {"name": m[1]}}))
