"""The tables: calls, the outbox of call events, campaigns, their contacts, the do-not-call list,
and greetings handed from the process that synthesised them to the one the stream reached."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from outcall.database import UTCDateTime
from outcall.values import FINAL_STATUSES, STATUS_ORDER, EndReason, status_rank, utcnow  # noqa: F401 (re-exported)

class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class CallRecord(Base):
    """Everything known about one call, from `/dialout` to the last callback."""

    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    to_number: Mapped[str] = mapped_column(String(20))
    from_number: Mapped[str] = mapped_column(String(20))
    variables: Mapped[dict[str, Any]]
    call_metadata: Mapped[dict[str, Any]] = mapped_column("metadata")
    config: Mapped[dict[str, Any]]  # the CallConfig the bot claims
    status: Mapped[str] = mapped_column(String(16))
    timeline: Mapped[list[Any]]  # [{"status": …, "at": ISO time}], each status once
    answered_by: Mapped[str | None] = mapped_column(String(32))
    voicemail_action: Mapped[str] = mapped_column(String(16))
    transfer_number: Mapped[str | None] = mapped_column(String(20))
    # A transfer: dialing, accepted, connected, declined, no-answer, busy, failed; cold ones "dialed"
    transfer_status: Mapped[str | None] = mapped_column(String(16))
    transfer_note: Mapped[str | None] = mapped_column(Text)  # the bot's reason and summary, whispered
    bot_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # bot sessions after the first
    ring_secs: Mapped[float | None] = mapped_column(Float)
    talk_secs: Mapped[float | None] = mapped_column(Float)
    end_reason: Mapped[str | None] = mapped_column(String(24))
    outcome: Mapped[str | None] = mapped_column(String(32))
    outcome_notes: Mapped[str | None] = mapped_column(Text)
    callback_time: Mapped[str | None] = mapped_column(String(64))
    # [{"outcome", "notes", "previous", "by", "at"}]: an operator's corrections, newest last
    outcome_corrections: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    summary: Mapped[str | None] = mapped_column(Text)
    analysis: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")  # outcall/analysis.py
    analysis_errors: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    transcript: Mapped[list[Any]]
    latencies_ms: Mapped[list[Any]]
    error: Mapped[str | None] = mapped_column(Text)
    recording_sid: Mapped[str | None] = mapped_column(String(64))
    recording_url: Mapped[str | None] = mapped_column(Text)
    recording_duration_secs: Mapped[int | None] = mapped_column(Integer)
    report_sequence: Mapped[int] = mapped_column(Integer, default=-1)
    final_report_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    ended_event_sent: Mapped[bool] = mapped_column(default=False)
    checked_at: Mapped[datetime | None]  # reconciliation last asked Twilio about this open call
    campaign_id: Mapped[str | None] = mapped_column(String(36))
    contact_id: Mapped[int | None] = mapped_column(BigInteger)
    channel: Mapped[str] = mapped_column(String(8), default="phone", server_default="phone")  # values.Channel
    agent_id: Mapped[str | None] = mapped_column(String(36))  # the agent and version the call ran (outcall/agents.py)
    agent_version: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_calls_created", "created_at", "id"),
        Index("ix_calls_campaign_created", "campaign_id", "created_at"),
        Index("ix_calls_status_created", "status", "created_at"),
        Index("ix_calls_outcome_created", "outcome", "created_at"),
        Index("ix_calls_updated", "updated_at"),
        Index("ix_calls_to_created", "to_number", "created_at"),
        Index("ix_calls_agent_created", "agent_id", "agent_version", "created_at"),
    )

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class CallEvent(Base):
    """One event for the call-events webhook, kept until the receiver accepts it."""

    __tablename__ = "call_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    call_id: Mapped[str] = mapped_column(String(36))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    given_up_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_call_events_due", "delivered_at", "given_up_at", "next_attempt_at"),
        Index("ix_call_events_delivered", "delivered_at"),
    )


class CampaignStatus(StrEnum):
    DRAFT = "draft"  # created; contacts can be imported
    RUNNING = "running"
    PAUSED = "paused"  # by the operator, or by the circuit breaker (see status_reason)
    STOPPED = "stopped"  # by the operator; nothing more is dialed
    COMPLETED = "completed"  # every contact done, or the end date passed


class Campaign(Base):
    """A list of contacts called with one script, within calling hours, at a set pace."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.DRAFT.value)
    status_reason: Mapped[str | None] = mapped_column(Text)  # why it paused or completed
    settings: Mapped[dict[str, Any]]  # the CampaignSettings the operator gave (outcall/campaigns.py)
    next_from_index: Mapped[int] = mapped_column(Integer, default=0)  # rotation through the number pool
    next_dial_at: Mapped[datetime | None]  # pacing: no dial of this campaign before then
    dial_day: Mapped[str | None] = mapped_column(String(10))  # the campaign-local day dials_today counts
    dials_today: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    running_since: Mapped[datetime | None]  # last start or resume: the circuit breaker looks no further back


class ContactState(StrEnum):
    PENDING = "pending"  # waiting for next_attempt_at (and its calling window)
    DIALING = "dialing"  # claimed by a dispatcher; Twilio is being asked
    CALLING = "calling"  # Twilio has the call; it holds a concurrency slot until it ends
    DONE = "done"  # see done_reason


IN_FLIGHT = (ContactState.DIALING.value, ContactState.CALLING.value)


class Contact(Base):
    """One person to call in a campaign, and where their calling stands."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(36), ForeignKey("campaigns.id", ondelete="CASCADE"))
    phone: Mapped[str] = mapped_column(String(20))
    variables: Mapped[dict[str, Any]]
    timezone: Mapped[str] = mapped_column(String(64))
    row_number: Mapped[int | None] = mapped_column(Integer)  # line in the imported file
    state: Mapped[str] = mapped_column(String(10), default=ContactState.PENDING.value)
    next_attempt_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    current_call_id: Mapped[str | None] = mapped_column(String(36))
    last_call_id: Mapped[str | None] = mapped_column(String(36))
    last_end_reason: Mapped[str | None] = mapped_column(String(24))
    done_reason: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ux_contacts_campaign_phone", "campaign_id", "phone", unique=True),
        Index("ix_contacts_due", "campaign_id", "state", "next_attempt_at", "id"),
    )


class DoNotCall(Base):
    """A number never to be dialed, by any campaign or by /dialout."""

    __tablename__ = "do_not_call"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))  # api, import, cli, outcome
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Agent(Base):
    """A named call profile (outcall/agents.py); `profile` is its current version's."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    profile: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AgentVersion(Base):
    """Every version an agent has had, kept for the calls that ran it."""

    __tablename__ = "agent_versions"

    agent_id: Mapped[str] = mapped_column(String(36), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    profile: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SynthesisedGreeting(Base):
    """A greeting's audio, synthesised while the phone rang, for whichever process the call's
    stream reaches (outcall/greetings.py). Kept minutes, not days: it is a hand-off."""

    __tablename__ = "greeting_audio"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of text, voice and model
    audio: Mapped[bytes] = mapped_column(LargeBinary)  # 8 kHz μ-law
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
