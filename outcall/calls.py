"""A call's script and its rendered config.

`CallScript` is what a user says about a call — in a `/dialout` body or a campaign's settings,
validated once here. `render_call_config` turns it, with the server's settings as defaults, into
the `CallConfig` the server keeps with the record and the bot claims when the call connects.
"""

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from outcall import prompts
from outcall.analysis import AnalysisField
from outcall.phone_numbers import PhoneNumber
from outcall.request_body import RequestBody
from outcall.settings import Settings
from outcall.values import Channel

VoicemailAction = Literal["off", "hangup", "leave_message"]


class CallScript(RequestBody):
    """What the agent says and does on a call: the part `/dialout` and a campaign share.

    Every field left out falls back to the server's settings. Templates may use `{placeholders}`
    filled from `variables` (and, in a campaign, each contact's CSV columns); they are checked
    for well-formedness here and filled when the call is placed.
    """

    prompt: str | None = Field(default=None, max_length=20_000)
    greeting: str | None = Field(default=None, max_length=2_000)
    variables: prompts.Variables = Field(default_factory=dict)
    wait_for_callee: bool | None = None
    voicemail: VoicemailAction | None = None
    voicemail_message: str | None = Field(default=None, max_length=2_000)
    transfer_number: PhoneNumber | None = None
    transfer_mode: Literal["cold", "warm"] | None = Field(default=None, description="warm: a whisper to the person first; unset: TRANSFER_MODE")
    record: bool | None = Field(default=None, description="record the call's audio; unset: RECORDING")

    @field_validator("variables")
    @classmethod
    def _variable_names(cls, variables: prompts.Variables) -> prompts.Variables:
        bad = [name for name in variables if not name.isidentifier()]
        if bad:
            raise ValueError(
                f"variable names must be plain identifiers like first_name; not {', '.join(map(repr, bad))}"
            )
        return variables

    @field_validator("prompt", "greeting", "voicemail_message")
    @classmethod
    def _well_formed(cls, template: str | None) -> str | None:
        if template is not None:
            prompts.placeholders(template)  # TemplateError is a ValueError: a 422 naming the field
        return template

    def placeholders(self) -> set[str]:
        """Placeholder names the script's own templates use."""
        return {name for t in (self.prompt, self.greeting, self.voicemail_message) if t for name in prompts.placeholders(t)}


class CallConfig(BaseModel):
    """Everything one call needs, rendered by the server when it places the call: what the bot
    claims, and what the server keeps for Twilio (`transfer_number`, `recording`)."""

    call_id: str
    to_number: str
    from_number: str
    system_instruction: str
    greeting: str
    wait_for_callee: bool
    max_duration_secs: int
    voicemail_action: VoicemailAction = "off"
    voicemail_message: str = ""
    transfer_number: str | None = None
    transfer_mode: Literal["cold", "warm"] = "cold"
    recording: bool = False
    channel: Channel = Channel.PHONE
    analysis_fields: list[AnalysisField] = Field(default_factory=list)  # what the post-call request extracts
    # An agent's choices (outcall/agents.py); None: the server's settings
    idle_timeout_secs: float | None = None
    outcomes: list[str] | None = None
    voice: str | None = None
    tts_model: str | None = None
    stt_model: str | None = None
    stt_language: str | None = None
    llm_model: str | None = None
    llm_provider: Literal["google", "openai"] | None = None
    llm_base_url: str | None = None
    agent_id: str | None = None
    agent_version: int | None = None
    # Set when the bot claims the call: which bot session this is (a warm transfer nobody took
    # hands the call to a second one), and for a later session the conversation so far
    bot_generation: int = 0
    history: list[dict] = Field(default_factory=list)
    resume_note: str | None = None
    report_token: str = ""  # issued when the bot claims the call
    greeting_audio: str | None = None  # the greeting, synthesised while the phone rang: base64 8 kHz μ-law

    @property
    def can_transfer(self) -> bool:
        return bool(self.transfer_number)

    def call_settings(self, settings: Settings) -> Settings:
        """The server's settings with this call's own choices over them, for everything the call
        reads from settings: its outcomes, silence limit, voice, speech models and LLM (provider,
        endpoint, model)."""
        update: dict = {}
        provider = self.llm_provider or settings.llm_provider
        if self.llm_provider:
            update["llm_provider"] = self.llm_provider
        if self.llm_base_url:
            update["openai_base_url"] = self.llm_base_url
        if self.outcomes:
            update["call_outcomes"] = self.outcomes
        if self.idle_timeout_secs:
            update["idle_timeout_secs"] = self.idle_timeout_secs
        for mine, setting in (("voice", "cartesia_voice"), ("tts_model", "cartesia_model"),
                              ("stt_model", "deepgram_model"), ("stt_language", "deepgram_language")):
            if getattr(self, mine):
                update[setting] = getattr(self, mine)
        if self.llm_model:
            update["openai_model" if provider == "openai" else "google_model"] = self.llm_model
        return settings.model_copy(update=update) if update else settings


def render_call_config(
    settings: Settings, script: CallScript, *, call_id: str, to_number: str, from_number: str
) -> CallConfig:
    """A call's config: each of the script's fields, else the server's setting, else the
    built-in default, with the templates filled. A TemplateError's `field` names the template
    at fault."""
    templates = {
        "prompt": script.prompt or settings.bot_prompt or prompts.DEFAULT_PROMPT,
        "greeting": script.greeting or settings.bot_greeting or prompts.DEFAULT_GREETING,
        "voicemail_message": script.voicemail_message or settings.voicemail_message or prompts.DEFAULT_VOICEMAIL_MESSAGE,
    }
    rendered = {}
    for field, template in templates.items():
        fill = prompts.system_instruction if field == "prompt" else prompts.render
        try:
            rendered[field] = fill(template, script.variables)
        except prompts.TemplateError as e:
            raise prompts.TemplateError(f"{field} template: {e}", field=field) from None
    return CallConfig(
        call_id=call_id,
        to_number=to_number,
        from_number=from_number,
        system_instruction=rendered["prompt"],
        greeting=rendered["greeting"],
        wait_for_callee=settings.wait_for_callee if script.wait_for_callee is None else script.wait_for_callee,
        max_duration_secs=settings.max_call_duration_secs,
        voicemail_action=script.voicemail or settings.voicemail,
        voicemail_message=rendered["voicemail_message"],
        transfer_number=script.transfer_number or settings.transfer_number,
        transfer_mode=script.transfer_mode or settings.transfer_mode,
        recording=settings.recording if script.record is None else script.record,
        analysis_fields=settings.analysis_fields,
    )


class CallClaimError(Exception):
    """The call cannot be handed to a bot; `status` is the HTTP status that says why."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason
