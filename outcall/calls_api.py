"""The calls API: records (`GET /calls`, `/calls/export`, `/calls/figures`, `GET /calls/{id}`),
outcome corrections, hang-up, and the bot's own endpoints.

Users call the first ones with the API key (the console calls the same functions with its
session); the call's bot calls `/report` and `/transfer`
with the report token it received when it claimed the call.
"""

import base64
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from loguru import logger
from pydantic import BaseModel, Field

from twilio.rest import Client as TwilioClient

from outcall.api_errors import error_responses, unprocessable
from outcall.call_store import CallFigures, CallFilter, CallStore, decode_cursor
from outcall.call_views import ANALYSIS_COLUMN, EXPORT_AS_TEXT, EXPORT_COLUMNS, CallDetail, CallList, call_detail, call_summary, calls_csv
from outcall.calls import CallClaimError, CallConfig
from outcall.dependencies import SettingsDep, CallStoreDep, bearer_token, require_api_key, require_report_token, require_twilio
from outcall.greetings import GreetingAudio
from outcall.models import FINAL_STATUSES, STATUS_ORDER, CallRecord, EndReason, utcnow
from outcall.phone_numbers import PhoneNumber
from outcall import prompts
from outcall.reports import CallReport, TransferRequest
from outcall.request_body import RequestBody
from outcall.settings import Settings
from outcall.twilio_api import TwilioCallError, transfer_twiml, update_twilio_call, warm_transfer_twiml
from outcall.values import Channel

router = APIRouter(prefix="/calls", tags=["calls"], responses=error_responses(400, 401, 404, 409, 429, 502, 503))

CallStatus = Literal["queued", "initiated", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled"]
assert set(CallStatus.__args__) == set(STATUS_ORDER + FINAL_STATUSES)


def _aware(value: datetime | None) -> datetime | None:
    """Dates without a zone are taken as UTC."""
    return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value


async def _record(store: CallStore, call_id: str) -> CallRecord:
    record = await store.get(call_id)
    if record is None:
        raise HTTPException(404, f"No call with id {call_id!r}")
    return record


def call_filter(
    status: CallStatus | None = None,
    outcome: str | None = Query(None, max_length=32),
    end_reason: EndReason | None = None,
    campaign_id: str | None = Query(None, max_length=36),
    number: PhoneNumber | None = Query(None, description="the number called, E.164"),
    channel: Channel | None = Query(None, description="phone, or browser: the console's test calls"),
    agent_id: str | None = Query(None, max_length=36),
    agent_version: int | None = Query(None, ge=1, description="with agent_id: the calls of one version"),
    created_after: datetime | None = Query(None, description="ISO 8601; without a zone, UTC"),
    created_before: datetime | None = Query(None, description="ISO 8601; without a zone, UTC"),
    analysis: str | None = Query(
        None, max_length=200, description="an analysis field's value, as field:value (sentiment:negative)"
    ),
    *,
    settings: SettingsDep,
) -> CallFilter:
    """The filters `GET /calls`, the export and the console's calls page share."""
    return CallFilter(
        analysis=analysis_filter(analysis, settings) if analysis else None,
        status=status,
        outcome=outcome,
        end_reason=end_reason.value if end_reason else None,
        campaign_id=campaign_id,
        number=number,
        channel=channel.value if channel else None,
        agent_id=agent_id,
        agent_version=agent_version,
        created_after=_aware(created_after),
        created_before=_aware(created_before),
    )


CallFilterDep = Annotated[CallFilter, Depends(call_filter)]


def analysis_filter(given: str, settings: Settings) -> tuple[str, str, str]:
    """`field:value` as (field, its type, value); HTTPException 400 unless the server has such a
    field and the value can be one of its values."""
    name, sep, value = given.partition(":")
    fields = {f.name: f for f in settings.analysis_fields}
    field = fields.get(name.strip())
    if not sep or field is None:
        raise HTTPException(400, f"analysis must be field:value with one of the fields {', '.join(fields) or '(none set)'}")
    value = value.strip()
    if field.type == "boolean" and value not in ("true", "false"):
        raise HTTPException(400, f"analysis field {field.name} is true or false, not {value!r}")
    if field.type == "enum" and value not in field.options:
        raise HTTPException(400, f"analysis field {field.name} is one of {', '.join(field.options)}, not {value!r}")
    if field.type == "number":
        try:
            float(value)
        except ValueError:
            raise HTTPException(400, f"analysis field {field.name} is a number, not {value!r}")
    return field.name, field.type, value


def checked_cursor(cursor: str | None = Query(None, max_length=200, description="next_cursor from the previous page")) -> str | None:
    if cursor:
        try:
            decode_cursor(cursor)
        except ValueError as e:
            raise HTTPException(400, str(e))
    return cursor


@router.get("", response_model=CallList, dependencies=[Depends(require_api_key)])
async def list_calls(
    store: CallStoreDep,
    where: CallFilterDep,
    cursor: Annotated[str | None, Depends(checked_cursor)],
    limit: int = Query(50, ge=1, le=200),
):
    """Calls, newest first, filtered; follow `next_cursor` for older ones."""
    records, next_cursor = await store.list(where, cursor=cursor, limit=limit)
    return CallList(calls=[call_summary(r) for r in records], next_cursor=next_cursor)


@router.get(
    "/export",
    response_class=StreamingResponse,
    dependencies=[Depends(require_api_key)],
    responses={200: {"content": {"text/csv": {}}, "description": "one row per call, newest first"}},
)
async def export_calls(store: CallStoreDep, where: CallFilterDep, settings: SettingsDep):
    """Every call the filters match, as CSV, streamed (any number of rows in flat memory); the
    analysis fields come last, a column each."""
    return calls_csv_response(store, where, settings)


def calls_csv_response(store: CallStore, where: CallFilter, settings: Settings) -> StreamingResponse:
    rows = store.rows(EXPORT_COLUMNS | ANALYSIS_COLUMN, where, as_text=EXPORT_AS_TEXT)
    return StreamingResponse(
        calls_csv(rows, [field.name for field in settings.analysis_fields]),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="calls.csv"'},
    )


@router.get("/figures", response_model=CallFigures, dependencies=[Depends(require_api_key)])
async def call_figures(
    store: CallStoreDep, since: datetime | None = Query(None, description="ISO 8601; default: today's start, UTC")
):
    """How the calls placed since `since` went: placed, answered, pickup rate, talk time, outcomes."""
    return await store.figures(_aware(since) or start_of_today())


def start_of_today() -> datetime:
    return utcnow().replace(hour=0, minute=0, second=0, microsecond=0)


@router.get("/{call_id}", response_model=CallDetail, dependencies=[Depends(require_api_key)])
async def get_call(call_id: str, store: CallStoreDep):
    """Everything recorded about one call, transcript included."""
    return call_detail(await _record(store, call_id))


class HangupResponse(BaseModel):
    call_id: str
    status: Literal["hanging_up", "canceling"]


class OutcomeCorrection(RequestBody):
    """An operator's verdict on what the call achieved; it replaces the bot's, which is kept."""

    outcome: str = Field(max_length=32, description="one of CALL_OUTCOMES")
    notes: str | None = Field(default=None, max_length=2000)


@router.patch("/{call_id}", response_model=CallDetail, dependencies=[Depends(require_api_key)])
async def correct_call(call_id: str, body: OutcomeCorrection, store: CallStoreDep, settings: SettingsDep):
    """Correct the call's outcome (`do_not_call` puts the number on the do-not-call list)."""
    return call_detail(await correct_outcome(store, settings, call_id, body, by="api"))


async def correct_outcome(store: CallStore, settings: Settings, call_id: str, body: OutcomeCorrection, by: str) -> CallRecord:
    """Raises HTTPException: no such call, or an outcome the call's agent (else the server) does not know."""
    record = await _record(store, call_id)
    outcomes = CallConfig.model_validate(record.config).outcomes or settings.call_outcomes
    if body.outcome not in outcomes:
        raise unprocessable("outcome", f"outcome must be one of {', '.join(outcomes)}")
    logger.info(f"Call {call_id}: outcome corrected to {body.outcome} by {by}")
    return await store.correct_outcome(call_id, body.outcome, body.notes, by)


@router.post("/{call_id}/hangup", response_model=HangupResponse, dependencies=[Depends(require_api_key)])
async def hang_up(call_id: str, request: Request, store: CallStoreDep):
    """End a call now: cancel it if nobody has answered yet, else hang up."""
    return await hang_up_call(store, request.app.state.twilio, call_id)


async def hang_up_call(store: CallStore, twilio: TwilioClient | None, call_id: str) -> HangupResponse:
    """Raises HTTPException (no such call, already ended, not at Twilio yet) or TwilioCallError."""
    record = await _record(store, call_id)
    if record.is_final:
        raise HTTPException(409, f"Call {call_id} has already ended ({record.status})")
    if record.call_sid is None:
        raise HTTPException(409, f"Call {call_id} has not reached Twilio yet; try again in a moment")
    twilio = require_twilio(twilio)
    answered = record.answered_at is not None
    await update_twilio_call(twilio, record.call_sid, status="completed" if answered else "canceled")
    if answered:
        await store.set_end_reason(call_id, EndReason.API_HANGUP)
    logger.info(f"Call {call_id} {'hung up' if answered else 'canceled'} through the API")
    return HangupResponse(call_id=call_id, status="hanging_up" if answered else "canceling")


def report_ttl_secs(settings: Settings) -> int:
    """A bot reports until its call ends, and retries a little after."""
    return settings.max_call_duration_secs + 3600


async def claim_call(
    store: CallStore, greetings: GreetingAudio, settings: Settings, call_id: str, token: str, channel: Channel = Channel.PHONE
) -> CallConfig:
    """The call's config for the one bot whose stream token proves it serves the call, with the
    greeting's audio if it was synthesised while the phone rang. Raises CallClaimError."""
    secret = settings.secret("stream_secret") or ""
    config = await store.claim(call_id, token, secret, report_ttl_secs(settings), channel)
    greets = not config.wait_for_callee and not config.resume_note  # a call back from a transfer is not greeted again
    audio = await greetings.get(config.greeting, config.voice, config.tts_model) if greets else None
    return config.model_copy(update={"greeting_audio": base64.b64encode(audio).decode() if audio else None})


@router.get("/{call_id}/config", response_model=CallConfig, responses=error_responses(403))
async def call_config(call_id: str, request: Request, settings: SettingsDep, store: CallStoreDep):
    """A bot on Pipecat Cloud claims its call with the stream token (`Authorization: Bearer`)."""
    token = bearer_token(request)
    if not token or not settings.secret("stream_secret"):
        raise HTTPException(401, "Send the call's stream token as Authorization: Bearer <token>")
    try:
        return await claim_call(store, request.app.state.greetings, settings, call_id, token)
    except CallClaimError as e:
        logger.warning(f"Refused call config for {call_id}: {e.reason}")
        raise HTTPException(e.status, e.reason)


@router.post("/{call_id}/report", status_code=204, dependencies=[Depends(require_report_token)])
async def report(call_id: str, body: CallReport, store: CallStoreDep):
    """The bot's transcript, outcome and summary; applying one twice is harmless."""
    await _record(store, call_id)
    await store.apply_report(call_id, body)
    return Response(status_code=204)


class TransferResponse(BaseModel):
    call_id: str
    transferred_to: str


@router.post("/{call_id}/transfer", response_model=TransferResponse, dependencies=[Depends(require_report_token)])
async def transfer(call_id: str, request: Request, store: CallStoreDep, settings: SettingsDep,
                   body: TransferRequest | None = None):
    """Hand the live call to a person: Twilio replaces the bot's stream with a `<Dial>` (warm:
    the person first hears the body's reason and summary, and may decline)."""
    return await transfer_to_person(store, request.app.state.twilio, settings, call_id, body or TransferRequest())


async def transfer_to_person(
    store: CallStore, twilio: TwilioClient | None, settings: Settings, call_id: str, note: TransferRequest
) -> TransferResponse:
    """Raises HTTPException (no such call, nowhere to transfer to) or TwilioCallError."""
    record = await _record(store, call_id)
    if not record.transfer_number:
        raise HTTPException(409, "No transfer number: set TRANSFER_NUMBER or the call's transfer_number")
    if record.is_final or record.call_sid is None:
        raise HTTPException(409, f"Call {call_id} is not in progress ({record.status})")
    twilio = require_twilio(twilio)
    warm = CallConfig.model_validate(record.config).transfer_mode == "warm"
    if warm:
        twiml = warm_transfer_twiml(settings, call_id, record.transfer_number, record.from_number, prompts.TRANSFER_HOLD)
    else:
        twiml = transfer_twiml(record.transfer_number, record.from_number)
    spoken = f"{note.reason}\n{note.summary}" if note.reason or note.summary else ""
    if warm:  # before Twilio is asked: the whisper may be fetched at once
        await store.transfer_started(call_id, True, spoken)
    try:
        await update_twilio_call(twilio, record.call_sid, twiml=twiml)
    except TwilioCallError:
        if warm:
            await store.transfer_result(call_id, record.call_sid, "failed")
        raise
    if not warm:
        await store.transfer_started(call_id, False, spoken)
    logger.info(f"Call {call_id} transferred ({'warm' if warm else 'cold'}) to {record.transfer_number}")
    return TransferResponse(call_id=call_id, transferred_to=record.transfer_number)
