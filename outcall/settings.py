"""All configuration, read once from the environment (and `.env`)."""

import json
from functools import cached_property
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


from outcall.analysis import DEFAULT_ANALYSIS_FIELDS, AnalysisField, unique_names
from outcall.phone_numbers import PhoneNumber
from outcall.values import DEFAULT_OUTCOMES

PIPECAT_CLOUD_WS_HOST = "api.pipecat.daily.co"


class Settings(BaseSettings):
    """Every setting of the server and the bot, one environment variable each.

    Nothing is required at startup: `missing_settings()` lists what is absent and which
    features that disables, and the features themselves refuse clearly when used.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # Server
    env: Literal["local", "production"] = "local"
    port: int = 7860
    workers: int = Field(default=1, ge=1)  # server processes sharing PORT (each carries its own calls)
    server_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SERVER_URL", "LOCAL_SERVER_URL")
    )
    dialout_api_key: SecretStr | None = None
    stream_secret: SecretStr | None = None
    stream_token_ttl_secs: int = 300
    log_level: str = "INFO"
    shutdown_drain_secs: float = Field(default=30, ge=0)  # on SIGTERM, calls in progress get this long to finish
    database_url: str = "sqlite+aiosqlite:///./data/outcall.db"

    # Twilio
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_phone_number: PhoneNumber | None = None
    twilio_api_base_url: str = "https://api.twilio.com"

    # Pipecat Cloud (ENV=production)
    agent_name: str | None = None
    organization_name: str | None = None
    pipecat_cloud_region: str | None = None

    # Speech-to-text: Deepgram
    deepgram_api_key: SecretStr | None = None
    deepgram_base_url: str = ""  # empty: Deepgram's production host
    deepgram_model: str = "nova-3-general"
    deepgram_language: str = "en"

    # LLM: Google Gemini (the default), or any OpenAI-compatible chat-completions endpoint
    llm_provider: Literal["google", "openai"] = "google"
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None  # None: OpenAI's; or a self-hosted server's, e.g. http://localhost:8000/v1
    openai_model: str = "gpt-4.1-mini"
    google_api_key: SecretStr | None = None
    google_api_base_url: str | None = None  # None: Google's production host
    google_model: str = "gemini-2.5-flash"

    # Text-to-speech: Cartesia
    cartesia_api_key: SecretStr | None = None
    cartesia_url: str = "wss://api.cartesia.ai/tts/websocket"
    cartesia_voice: str = "71a7ad14-091c-4e8e-a314-022ece01c121"
    cartesia_model: str = "sonic-3"
    cartesia_api_url: str = "https://api.cartesia.ai"  # REST API: greetings synthesised while the phone rings
    greeting_cache_mb: int = 64  # synthesised greetings kept in memory; 0: the bot says the greeting live

    # Conversation
    bot_prompt: str | None = None  # template; None: outcall.prompts.DEFAULT_PROMPT
    bot_greeting: str | None = None  # template; None: outcall.prompts.DEFAULT_GREETING
    wait_for_callee: bool = False
    turn_stop: Literal["smart_turn", "speech_timeout"] = "smart_turn"
    speculative_replies: bool = True  # the LLM answers from VAD stop, held until the turn ends
    user_speech_timeout_secs: float = 0.6
    idle_timeout_secs: float = 10.0
    max_call_duration_secs: int = 600

    # Call lifecycle
    call_outcomes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_OUTCOMES))
    summary_prompt: str | None = None  # None: pipelines.summary.DEFAULT_SUMMARY_PROMPT
    # What the post-call request extracts from every conversation (JSON list; outcall/analysis.py)
    analysis_fields: Annotated[list[AnalysisField], NoDecode] = Field(default_factory=lambda: list(DEFAULT_ANALYSIS_FIELDS))
    voicemail: Literal["off", "hangup", "leave_message"] = "off"
    voicemail_message: str | None = None  # template; None: outcall.prompts.DEFAULT_VOICEMAIL_MESSAGE
    voicemail_voice: str = "Polly.Joanna-Neural"
    transfer_number: PhoneNumber | None = None
    transfer_mode: Literal["cold", "warm"] = "cold"  # warm: the person hears why and a summary first, and may decline
    transfer_fallback: Literal["bot", "goodbye"] = "bot"  # a warm transfer nobody took: back to the bot, or an apology
    recording: bool = False
    call_events_webhook_url: str | None = None
    call_events_secret: SecretStr | None = None
    call_events_retention_days: float = Field(default=7, gt=0)  # delivered events are kept this long

    # Campaigns
    dialer_enabled: bool = True  # run the campaign dispatcher in this server instance

    # Operator console (/console)
    dashboard_password: SecretStr | None = None  # None: operators sign in with DIALOUT_API_KEY
    console_session_hours: float = Field(default=12, gt=0, le=720)  # a sign-in lasts this long
    test_calls: bool = True  # the console's Test call page: talk with the bot from a browser
    test_calls_max: int = Field(default=2, ge=0)  # test calls at once, per server process

    @field_validator("env", mode="before")
    @classmethod
    def _lowercase_env(cls, value: str) -> str:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("twilio_phone_number", "transfer_number", mode="before")
    @classmethod
    def _blank_is_unset(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("call_outcomes", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("analysis_fields", mode="before")
    @classmethod
    def _analysis_fields_json(cls, value):
        if isinstance(value, str):  # from the environment: JSON, empty for the default
            try:
                return json.loads(value) if value.strip() else list(DEFAULT_ANALYSIS_FIELDS)
            except json.JSONDecodeError as e:
                raise ValueError(f"ANALYSIS_FIELDS must be a JSON list of fields (see env.example): {e}") from None
        return value

    @field_validator("analysis_fields")
    @classmethod
    def _unique_analysis_fields(cls, fields: list[AnalysisField]) -> list[AnalysisField]:
        return unique_names(fields)

    @field_validator("server_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @cached_property
    def pipecat_cloud_ws_url(self) -> str:
        region = f"{self.pipecat_cloud_region}." if self.pipecat_cloud_region else ""
        return f"wss://{region}{PIPECAT_CLOUD_WS_HOST}/ws/twilio"

    def secret(self, name: str) -> str | None:
        """The plain value of a SecretStr setting, or None when unset or empty."""
        value = getattr(self, name)
        return value.get_secret_value() or None if value else None

    def missing_settings(self) -> list[tuple[str, str]]:
        """(variable, what stops working without it) for every feature left unconfigured."""
        missing = []

        def need(names: list[str], consequence: str):
            absent = [n for n in names if not getattr(self, n.lower())]
            if absent:
                missing.append((" + ".join(absent), consequence))

        need(["DIALOUT_API_KEY"], "POST /dialout answers 503 (no calls can be placed)")
        need(["SERVER_URL"], "no calls: Twilio cannot reach /twiml and streams have no URL")
        need(
            ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"],
            "no calls; /twiml cannot check Twilio signatures (answers 403)",
        )
        need(["TWILIO_PHONE_NUMBER"], "every /dialout must give from_number")
        need(["STREAM_SECRET"], "no calls: streams cannot be authenticated")
        need(["DEEPGRAM_API_KEY"], "the bot cannot hear (speech-to-text)")
        if self.llm_provider == "google":
            need(["GOOGLE_API_KEY"], "the bot cannot think (LLM)")
        elif not self.openai_base_url:  # a self-hosted server may need no key
            need(["OPENAI_API_KEY"], "the bot cannot think (LLM_PROVIDER=openai, OpenAI's API)")
        need(["CARTESIA_API_KEY"], "the bot cannot speak (text-to-speech)")
        if self.call_events_webhook_url:
            need(["CALL_EVENTS_SECRET"], "call events are not sent: they could not be signed")
        return missing

    def startup_errors(self) -> list[str]:
        """Settings the server cannot start with: a startup error, not a warning."""
        errors = []
        if self.workers > 1 and self.database_url.startswith("sqlite"):
            errors.append(
                "WORKERS > 1 needs PostgreSQL (DATABASE_URL=postgresql+asyncpg://…): "
                "processes share call records and campaign claims through row locks SQLite does not have"
            )
        if self.is_production:
            errors += [
                f"ENV=production needs {name}" for name in ("AGENT_NAME", "ORGANIZATION_NAME") if not getattr(self, name.lower())
            ]
        return errors
