"""What the bot needs to run one call, and where the server keeps it until the call starts."""

from typing import Literal

from pydantic import BaseModel

from outcall import prompts
from outcall.settings import Settings

VoicemailAction = Literal["off", "hangup", "leave_message"]


class CallConfig(BaseModel):
    """Everything one call's bot needs, rendered by the server at `/dialout`."""

    call_id: str
    to_number: str
    from_number: str
    system_instruction: str
    greeting: str
    wait_for_callee: bool
    max_duration_secs: int
    voicemail_action: VoicemailAction = "off"
    voicemail_message: str = ""
    can_transfer: bool = False
    report_token: str = ""  # issued when the bot claims the call
    greeting_audio: str | None = None  # the greeting, synthesised while the phone rang: base64 8 kHz μ-law


def render_call_config(
    settings: Settings,
    *,
    call_id: str,
    to_number: str,
    from_number: str,
    variables: prompts.Variables,
    prompt: str | None = None,
    greeting: str | None = None,
    wait_for_callee: bool | None = None,
    voicemail_action: VoicemailAction | None = None,
    voicemail_message: str | None = None,
    transfer_number: str | None = None,
) -> CallConfig:
    """A call's config with its templates filled: the call's own, else the settings', else the
    defaults. A TemplateError's `field` names the template at fault."""
    templates = {
        "prompt": prompt or settings.bot_prompt or prompts.DEFAULT_PROMPT,
        "greeting": greeting or settings.bot_greeting or prompts.DEFAULT_GREETING,
        "voicemail_message": voicemail_message or settings.voicemail_message or prompts.DEFAULT_VOICEMAIL_MESSAGE,
    }
    rendered = {}
    for field, template in templates.items():
        fill = prompts.system_instruction if field == "prompt" else prompts.render
        try:
            rendered[field] = fill(template, variables)
        except prompts.TemplateError as e:
            raise prompts.TemplateError(f"{field} template: {e}", field=field) from None
    return CallConfig(
        call_id=call_id,
        to_number=to_number,
        from_number=from_number,
        system_instruction=rendered["prompt"],
        greeting=rendered["greeting"],
        wait_for_callee=settings.wait_for_callee if wait_for_callee is None else wait_for_callee,
        max_duration_secs=settings.max_call_duration_secs,
        voicemail_action=voicemail_action or settings.voicemail,
        voicemail_message=rendered["voicemail_message"],
        can_transfer=bool(transfer_number or settings.transfer_number),
    )


class CallClaimError(Exception):
    """The call cannot be handed to a bot; `status` is the HTTP status that says why."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason
