"""Twilio's callbacks about a call: progress, answering-machine verdict, recording, and a warm
transfer's whisper, the person's answer to it and the transfer's result.

Each is signature-checked like `/twiml` and names the call in its URL (`?call_id=`). All are
idempotent: Twilio retries, duplicates and reorders them, and the call store makes that harmless.
"""

from datetime import datetime
from email.utils import parsedate_to_datetime

from fastapi import APIRouter, HTTPException, Query, Request, Response
from loguru import logger

from outcall.api_errors import error_responses
from outcall.database import utcnow
from outcall.dependencies import SettingsDep, CallStoreDep
from outcall.models import CallRecord, EndReason
from outcall import prompts
from outcall.calls import CallConfig
from outcall.stream_auth import issue_stream_token
from outcall.twilio_api import TwilioCallError, hangup_twiml, stream_twiml, twilio_form, update_twilio_call, whisper_twiml

router = APIRouter(prefix="/twilio", tags=["Twilio webhooks"], responses=error_responses(400, 403, 404))

MACHINE_VERDICTS = {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}


def _event_time(form: dict[str, str]) -> datetime:
    """When Twilio says the event happened (its `Timestamp`), else now."""
    try:
        return parsedate_to_datetime(form["Timestamp"])
    except (KeyError, TypeError, ValueError):
        return utcnow()


def _found(record: CallRecord | None, call_id: str, form: dict[str, str]) -> CallRecord:
    if record is None:
        logger.warning(f"Twilio callback for unknown call {call_id!r} (CallSid {form.get('CallSid')})")
        raise HTTPException(404, f"No call {call_id!r} with CallSid {form.get('CallSid')!r}")
    return record


@router.post("/status", status_code=204)
async def call_status(request: Request, settings: SettingsDep, store: CallStoreDep, call_id: str = Query("")):
    """Twilio's StatusCallback: initiated, ringing, in-progress, then one final status."""
    form = await twilio_form(request, settings)
    duration = form.get("CallDuration")
    record = await store.apply_status(
        call_id,
        form.get("CallSid", ""),
        form.get("CallStatus", ""),
        _event_time(form),
        int(duration) if duration and duration.isdigit() else None,
    )
    record = _found(record, call_id, form)
    logger.info(f"Call {call_id} status {form.get('CallStatus')} (now {record.status})")
    return Response(status_code=204)


@router.post("/amd", status_code=204)
async def answering_machine(request: Request, settings: SettingsDep, store: CallStoreDep, call_id: str = Query("")):
    """The asynchronous answering-machine verdict; on a machine, hang up or leave the message."""
    form = await twilio_form(request, settings)
    answered_by = form.get("AnsweredBy", "unknown")
    record, first = await store.apply_answered_by(call_id, form.get("CallSid", ""), answered_by)
    record = _found(record, call_id, form)
    logger.info(f"Call {call_id} answered by {answered_by}")
    if not first or answered_by not in MACHINE_VERDICTS or record.is_final or record.voicemail_action == "off":
        return Response(status_code=204)
    leave_message = record.voicemail_action == "leave_message" and answered_by.startswith("machine_end")
    await store.voicemail_handled(call_id, EndReason.VOICEMAIL_LEFT if leave_message else EndReason.VOICEMAIL_SKIPPED)
    try:
        if leave_message:
            # Twilio sends this verdict at the beep, so the message starts on the recording.
            message = record.config["voicemail_message"]
            await update_twilio_call(
                request.app.state.twilio, record.call_sid, twiml=hangup_twiml(message, settings.voicemail_voice)
            )
        else:
            await update_twilio_call(request.app.state.twilio, record.call_sid, status="completed")
    except TwilioCallError as e:
        logger.warning(f"Could not act on voicemail for call {call_id}: {e.message}")
    return Response(status_code=204)


def twiml_response(twiml: str) -> Response:
    return Response(twiml, media_type="application/xml")


@router.post("/whisper")
async def transfer_whisper(request: Request, settings: SettingsDep, store: CallStoreDep, call_id: str = Query("")):
    """A warm transfer was answered: what the person hears before the calls are bridged."""
    form = await twilio_form(request, settings)
    record = await store.get(call_id)
    if record is None or record.transfer_status != "dialing":
        return twiml_response(hangup_twiml())
    reason, _, summary = (record.transfer_note or "").partition("\n")
    whisper = prompts.WHISPER.format(reason=reason or "the caller asked for a person", summary=summary)
    logger.info(f"Call {call_id}: warm transfer answered ({form.get('CallSid')}); whispering")
    return twiml_response(whisper_twiml(settings, call_id, whisper))


@router.post("/whisper-answer")
async def transfer_answer(request: Request, settings: SettingsDep, store: CallStoreDep, call_id: str = Query("")):
    """The person's key after the whisper: 1 bridges the calls (an empty response ends the
    whisper), anything else hangs their leg up."""
    form = await twilio_form(request, settings)
    accepted = form.get("Digits") == "1"
    parent_sid = form.get("ParentCallSid") or form.get("CallSid", "")
    _found(await store.transfer_answered(call_id, parent_sid, accepted), call_id, form)
    logger.info(f"Call {call_id}: the transfer was {'accepted' if accepted else 'declined'}")
    return twiml_response("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response />" if accepted else hangup_twiml())


@router.post("/transfer-result")
async def transfer_result(request: Request, settings: SettingsDep, store: CallStoreDep, call_id: str = Query("")):
    """The warm transfer's `<Dial>` ended: connected (nothing more to do), or nobody took the
    call and the callee hears an apology."""
    form = await twilio_form(request, settings)
    back_to_bot = settings.transfer_fallback == "bot" and bool(settings.secret("stream_secret"))
    call_sid = form.get("CallSid", "")
    record = _found(await store.transfer_result(call_id, call_sid, form.get("DialCallStatus", ""), back_to_bot), call_id, form)
    logger.info(f"Call {call_id}: transfer {record.transfer_status} (DialCallStatus {form.get('DialCallStatus')})")
    if record.transfer_status == "connected":
        return twiml_response(hangup_twiml())
    if back_to_bot and record.end_reason is None:  # a new stream, with a new token, to a new bot session
        config = CallConfig.model_validate(record.config)
        token = issue_stream_token(
            settings.secret("stream_secret"), call_id=call_id, call_sid=call_sid, to_number=config.to_number,
            from_number=config.from_number, ttl_secs=settings.stream_token_ttl_secs,
        )
        return twiml_response(stream_twiml(settings, config, token))
    return twiml_response(hangup_twiml(prompts.TRANSFER_UNAVAILABLE, settings.voicemail_voice))


@router.post("/recording", status_code=204)
async def recording_status(request: Request, settings: SettingsDep, store: CallStoreDep, call_id: str = Query("")):
    """The recording's status callback: keep where the finished recording is and how long it runs."""
    form = await twilio_form(request, settings)
    if form.get("RecordingStatus") != "completed":
        logger.warning(f"Recording for call {call_id} is {form.get('RecordingStatus')}: {form.get('ErrorCode', '')}")
        return Response(status_code=204)
    duration = form.get("RecordingDuration", "")
    record = await store.apply_recording(
        call_id,
        form.get("CallSid", ""),
        form.get("RecordingSid", ""),
        form.get("RecordingUrl", ""),
        int(duration) if duration.isdigit() else None,
    )
    _found(record, call_id, form)
    return Response(status_code=204)
