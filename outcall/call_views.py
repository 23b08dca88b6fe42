"""How a call record looks from outside: the API's responses and the call-events payloads."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from outcall.models import CallRecord
from outcall.reports import TranscriptTurn


class StatusChange(BaseModel):
    status: str
    at: datetime


class CallSummary(BaseModel):
    """A call in a list: who, when, how it ended."""

    id: str
    call_sid: str | None
    to_number: str
    from_number: str
    status: str
    answered_by: str | None
    end_reason: str | None
    outcome: str | None
    created_at: datetime
    ended_at: datetime | None
    talk_secs: float | None


class CallDetail(CallSummary):
    """Everything recorded about one call."""

    variables: dict[str, Any]
    metadata: dict[str, Any]
    timeline: list[StatusChange]
    voicemail_action: str
    transfer_number: str | None
    ring_secs: float | None
    outcome_notes: str | None
    callback_time: str | None
    summary: str | None
    transcript: list[TranscriptTurn]
    latencies_ms: list[int]
    error: str | None
    recording_sid: str | None
    recording_url: str | None
    recording_duration_secs: int | None
    answered_at: datetime | None
    updated_at: datetime


class CallList(BaseModel):
    calls: list[CallSummary]
    next_cursor: str | None  # pass as ?cursor= for the next page; None on the last page


def call_summary(record: CallRecord) -> CallSummary:
    return CallSummary.model_validate(record, from_attributes=True)


def call_detail(record: CallRecord) -> CallDetail:
    fields = {name: getattr(record, name) for name in CallDetail.model_fields if hasattr(record, name)}
    fields["metadata"] = record.call_metadata
    return CallDetail.model_validate(fields)
