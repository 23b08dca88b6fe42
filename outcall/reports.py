"""What the bot tells the server about its call, and how it gets there.

The bot sends its whole view of the call (transcript, outcome, summary, latencies) after each
turn and once more, marked final, at the end. Each report carries a rising sequence number and
replaces the previous one, so a retried or late report is harmless.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from loguru import logger
from pydantic import Field

from outcall.analysis import AnalysisValue
from outcall.request_body import RequestBody
from outcall.values import EndReason

RETRY_DELAYS_SECS = (0.5, 1, 2, 4, 8)  # about 15 s in all, then the report is logged instead


class RecordedOutcome(RequestBody):
    """The outcome of a call, as the LLM recorded it."""

    outcome: str = Field(max_length=32)
    notes: str = Field(default="", max_length=2000)
    callback_time: str | None = Field(default=None, max_length=64)


class TranscriptTurn(RequestBody):
    """One turn of the conversation."""

    speaker: Literal["bot", "callee"]
    text: str = Field(max_length=20_000)
    started_at: datetime
    latency_ms: int | None = None  # bot turns: from the callee's last word to the bot's first
    interrupted: bool = False


class CallReport(RequestBody):
    """The bot's view of its call so far; `final` once the call is over."""

    sequence: int = Field(ge=0)
    generation: int = Field(default=0, ge=0, description="the bot session sending it: reports of an earlier one are ignored")
    final: bool = False
    transcript: list[TranscriptTurn] = Field(default_factory=list, max_length=5000)
    outcome: RecordedOutcome | None = None
    summary: str | None = Field(default=None, max_length=5000)
    end_reason: EndReason | None = None
    # The post-call analysis (outcall/analysis.py): every field's value, and why each empty one is
    analysis: dict[str, AnalysisValue] | None = Field(default=None, max_length=100)
    analysis_errors: dict[str, str] | None = Field(default=None, max_length=100)


class TransferRequest(RequestBody):
    """Why the bot hands the call to a person, for the person's whisper in a warm transfer."""

    reason: str = Field(default="", max_length=300)
    summary: str = Field(default="", max_length=600, description="the conversation so far, in a sentence")


@dataclass
class CallProgress:
    """What the bot has learned about its call so far."""

    transcript: list[TranscriptTurn] = field(default_factory=list)
    outcome: RecordedOutcome | None = None
    summary: str | None = None
    end_reason: EndReason | None = None
    analysis: dict[str, AnalysisValue] | None = None
    analysis_errors: dict[str, str] | None = None

    def end(self, reason: EndReason) -> None:
        """Record why the call ends; the first reason stands."""
        self.end_reason = self.end_reason or reason

    def had_conversation(self) -> bool:
        return any(turn.speaker == "callee" for turn in self.transcript)

    def transcript_text(self) -> str:
        return "\n".join(f"{turn.speaker}: {turn.text}" for turn in self.transcript)

    def report(self) -> CallReport:
        return CallReport(
            sequence=0,
            transcript=list(self.transcript),
            outcome=self.outcome,
            summary=self.summary,
            end_reason=self.end_reason,
            analysis=self.analysis,
            analysis_errors=self.analysis_errors,
        )


class CallReporter:
    """Sends a call's reports to the dial-out server, with bounded retries."""

    def __init__(
        self, send: Callable[[CallReport], Awaitable[None]], call_id: str, retry_delays=RETRY_DELAYS_SECS, generation: int = 0
    ):
        self._send = send
        self._call_id = call_id
        self._generation = generation
        self._retry_delays = retry_delays
        self._sequence = 0
        self._pending: asyncio.Task | None = None

    def report_progress(self, report: CallReport) -> None:
        """Send a progress report in the background; a newer one supersedes one still retrying."""
        self._cancel_pending()
        self._pending = asyncio.create_task(self._deliver(self._number(report)))

    async def report_final(self, report: CallReport) -> bool:
        """Send the final report, retrying; if it cannot be delivered, log it in full."""
        self._cancel_pending()
        report = self._number(report)
        report.final = True
        delivered = await self._deliver(report)
        if not delivered:
            logger.error(f"Undelivered final report of call {self._call_id}: {report.model_dump_json()}")
        return delivered

    def _cancel_pending(self) -> None:
        if self._pending and not self._pending.done():
            self._pending.cancel()

    def _number(self, report: CallReport) -> CallReport:
        report.sequence = self._sequence
        report.generation = self._generation
        self._sequence += 1
        return report

    async def _deliver(self, report: CallReport) -> bool:
        for delay in (0, *self._retry_delays):
            await asyncio.sleep(delay)
            try:
                await self._send(report)
                return True
            except Exception as e:  # the server, or in-process its database, is briefly away
                retry = getattr(e, "retry", True)
                logger.warning(f"Report {report.sequence} of call {self._call_id} not delivered: {e}")
                if not retry:
                    return False
        return False
