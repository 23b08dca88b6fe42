"""Plain values every layer shares: Twilio's call statuses, the channel a call took, why a call
ended, the outcome names, and the time. It imports nothing beyond the standard library, so the settings, the CLI and the
bot use them without loading the database or Pipecat.
"""

from datetime import UTC, datetime
from enum import StrEnum

# Twilio's call statuses in the order a call moves through them; the last five are final.
STATUS_ORDER = ["queued", "initiated", "ringing", "in-progress"]
FINAL_STATUSES = ["completed", "busy", "no-answer", "failed", "canceled"]


def status_rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


class Channel(StrEnum):
    """How the callee is connected: a phone through Twilio, or the console's test phone."""

    PHONE = "phone"
    BROWSER = "browser"  # a test call from the console: the browser speaks Twilio's stream protocol to /ws


class EndReason(StrEnum):
    """Why a call ended: one of these, recorded once."""

    BOT_ENDED = "bot-ended"  # the LLM finished the conversation (end_call)
    CALLEE_HUNG_UP = "callee-hung-up"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    FAILED = "failed"  # Twilio could not place or connect the call
    CANCELED = "canceled"  # hung up through the API before anyone answered
    VOICEMAIL_LEFT = "voicemail-left"
    VOICEMAIL_SKIPPED = "voicemail-skipped"
    TRANSFERRED = "transferred"
    TRANSFER_FAILED = "transfer-failed"  # a warm transfer nobody took: the callee heard an apology
    MAX_DURATION = "max-duration"
    IDLE_TIMEOUT = "idle-timeout"
    API_HANGUP = "api-hangup"  # POST /calls/{id}/hangup on an answered call
    SERVER_SHUTDOWN = "server-shutdown"  # the server stopped (SIGTERM) before the call ended; it said goodbye
    BOT_LOST = "bot-lost"  # the bot died without its final report (process killed); closed by the server
    ERROR = "error"  # the dial was refused, or the bot failed or never connected


# What a call achieved, as the LLM records it (CALL_OUTCOMES changes the list).
DEFAULT_OUTCOMES = [
    "interested",
    "not_interested",
    "callback_requested",
    "do_not_call",
    "wrong_number",
    "voicemail",
    "other",
]


def utcnow() -> datetime:
    return datetime.now(UTC)
