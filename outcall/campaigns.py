"""What an operator says about a campaign: its script, numbers, schedule, limits and retries.

These are the request and response models of `/campaigns`; a campaign row keeps its
`CampaignSettings` as given, and the dispatcher reads them on every decision.
"""

from datetime import date, datetime
from typing import Any

import phonenumbers
from pydantic import BaseModel, Field, field_validator, model_validator

from outcall import prompts
from outcall.calling_windows import CallingWindows, TimeZoneName, default_windows, outside_legal_hours
from outcall.calls import CallScript
from outcall.values import EndReason
from outcall.phone_numbers import PhoneNumber
from outcall.request_body import RequestBody


class Retry(RequestBody):
    """How often to try a contact again after one kind of unanswered call."""

    max_attempts: int = Field(ge=1, le=20, description="attempts in all, the first one included")
    delay_secs: int = Field(ge=60, le=30 * 86400, description="wait after an attempt before the next")


class RetryPolicy(RequestBody):
    """Retries per end reason. A call a person answered is never retried, except a callback they asked for."""

    no_answer: Retry = Retry(max_attempts=3, delay_secs=3600)
    busy: Retry = Retry(max_attempts=3, delay_secs=900)
    failed: Retry = Retry(max_attempts=2, delay_secs=3600)
    voicemail: Retry = Retry(max_attempts=2, delay_secs=4 * 3600)

    def for_end_reason(self, reason: str | None) -> Retry | None:
        return {
            EndReason.NO_ANSWER: self.no_answer,
            EndReason.BUSY: self.busy,
            EndReason.FAILED: self.failed,
            EndReason.ERROR: self.failed,
            EndReason.VOICEMAIL_LEFT: self.voicemail,
            EndReason.VOICEMAIL_SKIPPED: self.voicemail,
        }.get(reason)


class CampaignSettings(CallScript):
    """Everything about how a campaign calls: its script (as in `/dialout`; each contact's own
    variables, its CSV columns, override `variables`), numbers, schedule, pace and retries."""

    timezone: TimeZoneName = Field(description="IANA zone for contacts whose number does not tell, and for dates")
    agent_id: str | None = Field(default=None, max_length=36, description="run this agent (its current version at each dial); the script fields here override its own")
    from_numbers: list[PhoneNumber] = Field(default_factory=list, max_length=100, description="used in rotation; empty: TWILIO_PHONE_NUMBER")
    default_country: str | None = Field(default=None, description="ISO code (US, GB…) for numbers written without +country code")
    start_date: date | None = None
    end_date: date | None = None
    calling_windows: CallingWindows = Field(default_factory=default_windows)
    allow_outside_legal_hours: bool = Field(default=False, description="permit windows before 08:00 or after 21:00 local")
    max_concurrent_calls: int = Field(default=5, ge=1, le=500)
    calls_per_second: float = Field(default=1.0, gt=0, le=100)
    daily_cap: int | None = Field(default=None, ge=1, description="dials per campaign-local day")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @field_validator("default_country")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        if value is not None and value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown country {value!r}: use a two-letter ISO code like US or GB")
        return value.upper() if value else value

    @model_validator(mode="after")
    def _consistent(self) -> "CampaignSettings":
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        illegal = outside_legal_hours(self.calling_windows)
        if illegal and not self.allow_outside_legal_hours:
            raise ValueError(
                f"calling windows outside 08:00-21:00 local time: {', '.join(illegal)}. "
                f"Calling then is unlawful in many places; set allow_outside_legal_hours to true if you are sure"
            )
        if not any(self.calling_windows.values()):
            raise ValueError("calling_windows has no window on any day, so nobody could be called")
        return self

    def script_for(self, contact_variables: prompts.Variables) -> CallScript:
        """The script of one contact's call: the campaign's, with the contact's own variables."""
        return self.model_copy(update={"variables": {**self.variables, **contact_variables}})


class CampaignCreate(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    settings: CampaignSettings


class CampaignUpdate(RequestBody):
    """Change a campaign's name or settings; `settings` fields given replace the current ones."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    settings: dict[str, Any] | None = None


class CampaignStats(BaseModel):
    """Where a campaign stands."""

    contacts: int
    pending: int
    in_progress: int
    done: int
    done_reasons: dict[str, int]
    calls: int
    end_reasons: dict[str, int]
    outcomes: dict[str, int]
    pickup_rate: float | None  # answered / calls that ended
    voicemail_rate: float | None  # reached a machine / answered
    average_talk_secs: float | None
    dials_today: int


class CampaignView(BaseModel):
    id: str
    name: str
    status: str
    status_reason: str | None
    settings: CampaignSettings
    created_at: datetime
    updated_at: datetime
    running_since: datetime | None
    stats: CampaignStats | None = None


class CampaignList(BaseModel):
    campaigns: list[CampaignView]
