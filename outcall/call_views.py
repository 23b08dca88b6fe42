"""How a call record looks from outside: the API's responses, the call-events payloads and the
CSV export."""

import csv
import json
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Row

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
    channel: str  # phone, or browser for a test call from the console
    agent_id: str | None  # the agent and version the call ran (outcall/agents.py)
    agent_version: int | None


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
    transfer_status: str | None  # dialed (cold), or a warm transfer's: dialing, accepted, connected, declined, no-answer…
    transfer_note: str | None  # the bot's reason and summary, whispered to the person in a warm transfer
    ring_secs: float | None
    outcome_notes: str | None
    callback_time: str | None
    outcome_corrections: list[OutcomeCorrectionView]
    contact_id: int | None
    summary: str | None
    analysis: dict[str, Any]  # the post-call analysis fields' values (None: empty)…
    analysis_errors: dict[str, str]  # …and why each empty one is
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


# The export's columns: {column in the file: attribute of CallRecord}. JSON columns are read as
# their stored text: variables and metadata go out as they are, the transcript is decoded here
# (SQLAlchemy's JSON type would cost the export a third of its speed).
EXPORT_COLUMNS = {
    name: name
    for name in (
        "id", "created_at", "channel", "to_number", "from_number", "campaign_id", "agent_id", "agent_version", "status", "answered_by", "end_reason",
        "outcome", "outcome_notes", "callback_time", "ring_secs", "talk_secs", "summary", "variables", "metadata",
        "transcript", "error", "recording_sid",
    )
} | {"metadata": "call_metadata"}
EXPORT_AS_TEXT = {"variables", "metadata", "transcript", "analysis"}
# After those, one column per analysis field ("analysis.sentiment"), read from the stored object.
ANALYSIS_COLUMN = {"analysis": "analysis"}
# Text that came from callees, CSV files or users: a spreadsheet must not run it as a formula.
_FREE_TEXT = {"outcome_notes", "callback_time", "summary", "variables", "metadata", "transcript", "error"}
_KINDS = [(name == "transcript", name in EXPORT_AS_TEXT, name in _FREE_TEXT) for name in EXPORT_COLUMNS]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_row(row: Row) -> list[str]:
    """One call as CSV cells; `row` holds EXPORT_COLUMNS in order (and may hold more after them)."""
    cells = []
    for value, (transcript, stored_json, free) in zip(row, _KINDS):
        if transcript:
            value = "\n".join(f"{turn['speaker']}: {turn['text']}" for turn in json.loads(value or "[]"))
        elif value is None or (stored_json and value in ("{}", "null")):
            value = ""
        elif isinstance(value, datetime):
            value = value.isoformat()
        else:
            value = str(value)
        cells.append("'" + value if free and value.startswith(_FORMULA_START) else value)  # OWASP: CSV injection
    return cells


def analysis_cells(stored: str | None, names: list[str]) -> list[str]:
    """A call's analysis values, one cell per field, in `names`' order (empty when not filled)."""
    values = json.loads(stored or "{}")
    cells = []
    for name in names:
        value = values.get(name)
        text = "" if value is None else json.dumps(value) if isinstance(value, bool) else str(value)
        cells.append("'" + text if text.startswith(_FORMULA_START) else text)
    return cells


async def calls_csv(rows: AsyncIterator[Row], analysis_names: list[str], batch: int = 500) -> AsyncIterator[str]:
    """The export as CSV text, a few hundred rows per chunk; `rows` hold EXPORT_COLUMNS, then
    ANALYSIS_COLUMN."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*EXPORT_COLUMNS, *(f"analysis.{name}" for name in analysis_names)])
    count = 0
    async for row in rows:
        writer.writerow(export_row(row) + analysis_cells(row.analysis, analysis_names))
        count += 1
        if count % batch == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
