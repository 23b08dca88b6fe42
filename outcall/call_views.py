"""How a call record looks from outside: the API's responses, the call-events payloads and the
CSV export."""

import csv
import io
import json
from collections.abc import AsyncIterator
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
    campaign_id: str | None


class OutcomeCorrectionView(BaseModel):
    outcome: str
    notes: str | None
    previous: str | None
    by: str
    at: datetime


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
    outcome_corrections: list[OutcomeCorrectionView]
    contact_id: int | None
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


EXPORT_COLUMNS = [
    "id", "created_at", "to_number", "from_number", "campaign_id", "status", "answered_by", "end_reason",
    "outcome", "outcome_notes", "callback_time", "ring_secs", "talk_secs", "summary", "variables", "metadata",
    "transcript", "error", "recording_sid",
]
# Text that came from callees, CSV files or users: a spreadsheet must not run it as a formula.
_FREE_TEXT = {"outcome_notes", "callback_time", "summary", "variables", "metadata", "transcript", "error"}


def export_row(record: CallRecord) -> list[str]:
    values = {
        **{name: getattr(record, name) for name in EXPORT_COLUMNS if hasattr(record, name)},
        "metadata": record.call_metadata,
        "transcript": "\n".join(f"{turn['speaker']}: {turn['text']}" for turn in record.transcript or []),
    }
    row = []
    for name in EXPORT_COLUMNS:
        value = values.get(name)
        if isinstance(value, dict):
            value = json.dumps(value, ensure_ascii=False) if value else ""
        elif isinstance(value, datetime):
            value = value.isoformat()
        text = "" if value is None else str(value)
        row.append(_defused(text) if name in _FREE_TEXT else text)
    return row


def _defused(text: str) -> str:
    """OWASP's advice against CSV injection: a cell that starts like a formula starts with ' instead."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def calls_csv(records: AsyncIterator[CallRecord], batch: int = 500) -> AsyncIterator[str]:
    """The export as CSV text, a few hundred rows per chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    rows = 0
    async for record in records:
        writer.writerow(export_row(record))
        rows += 1
        if rows % batch == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
