"""Agents: a named call profile — the script, its limits, outcomes, analysis fields, voice and
model — saved once and run from `/dialout` (`agent_id`) and from campaigns (`settings.agent_id`).

Every change makes a new version; a call record keeps the agent id and version it ran with, so
results compare version against version. A call's own fields still override the agent's, and
the agent's override the server's settings, which act as the default agent: what a call says is
decided here once (`script_with_agent`, `config_with_agent`), then rendered as any call is
(outcall/calls.py).
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from outcall.analysis import AnalysisField, unique_names
from outcall.calls import CallConfig, CallScript
from outcall.request_body import RequestBody


class AgentProfile(CallScript):
    """What an agent is. Fields left out fall back to the server's settings, as a call's do."""

    idle_timeout_secs: float | None = Field(default=None, gt=0, le=120, description="silence before the check-in")
    max_duration_secs: int | None = Field(default=None, ge=30, le=14_400, description="longest call")
    outcomes: list[str] | None = Field(default=None, min_length=1, max_length=30, description="what record_outcome accepts")
    analysis_fields: list[AnalysisField] | None = Field(default=None, max_length=50)
    voice: str | None = Field(default=None, min_length=1, max_length=100, description="the text-to-speech voice id")
    tts_model: str | None = Field(default=None, min_length=1, max_length=100, description="the text-to-speech model")
    stt_model: str | None = Field(default=None, min_length=1, max_length=100, description="the speech-to-text model")
    stt_language: str | None = Field(default=None, min_length=2, max_length=20, description="what the callee speaks, e.g. en or es")
    llm_model: str | None = Field(default=None, min_length=1, max_length=100, description="the LLM's model name")
    llm_provider: Literal["google", "openai"] | None = Field(default=None, description="unset: LLM_PROVIDER")
    llm_base_url: str | None = Field(
        default=None, max_length=500, pattern=r"^https?://", description="an OpenAI-compatible endpoint's root; unset: OPENAI_BASE_URL"
    )

    @field_validator("outcomes")
    @classmethod
    def _outcome_names(cls, outcomes: list[str] | None) -> list[str] | None:
        if outcomes is not None:
            bad = [o for o in outcomes if not o.isidentifier() or len(o) > 32]
            if bad:
                raise ValueError(f"outcomes must be names like callback_requested (≤ 32 characters); not {', '.join(map(repr, bad))}")
            if len(set(outcomes)) != len(outcomes):
                raise ValueError("outcomes must be different from each other")
        return outcomes

    @field_validator("analysis_fields")
    @classmethod
    def _unique_fields(cls, fields: list[AnalysisField] | None) -> list[AnalysisField] | None:
        return unique_names(fields) if fields is not None else None


class AgentCreate(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    profile: AgentProfile = Field(default_factory=AgentProfile)


class AgentUpdate(RequestBody):
    """A new version: `name` and/or the `profile` fields given (each replaces the current one;
    `null` returns a field to the server's setting)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    profile: dict[str, Any] | None = None


class AgentView(BaseModel):
    id: str
    name: str
    version: int
    profile: AgentProfile
    created_at: datetime
    updated_at: datetime


class AgentVersionView(BaseModel):
    version: int
    name: str
    profile: AgentProfile
    created_at: datetime


class AgentList(BaseModel):
    agents: list[AgentView]


class AgentVersionList(BaseModel):
    versions: list[AgentVersionView]


def script_with_agent(profile: AgentProfile, script: CallScript) -> CallScript:
    """The script a call runs: the agent's, with the fields the call (or its campaign) gives
    over it (its variables added to the agent's)."""
    own = script.model_dump(include=set(CallScript.model_fields), exclude_none=True)
    own["variables"] = {**profile.variables, **script.variables}
    return CallScript.model_validate({**profile.model_dump(include=set(CallScript.model_fields)), **own})


def config_with_agent(config: CallConfig, profile: AgentProfile, agent_id: str, version: int) -> CallConfig:
    """A rendered config, with the agent's limits, outcomes, analysis fields, voice and model
    where it sets them, and the agent and version it ran."""
    update: dict[str, Any] = {"agent_id": agent_id, "agent_version": version}
    for name in ("idle_timeout_secs", "outcomes", "voice", "tts_model", "stt_model", "stt_language", "llm_model",
                 "llm_provider", "llm_base_url"):
        if getattr(profile, name) is not None:
            update[name] = getattr(profile, name)
    if profile.max_duration_secs is not None:
        update["max_duration_secs"] = profile.max_duration_secs
    if profile.analysis_fields is not None:
        update["analysis_fields"] = profile.analysis_fields
    return config.model_copy(update=update)
