"""The dial-out server's own helpers, shaped like Pipecat's outbound example: what `/dialout`
takes and answers, and the TwiML that connects an answered call to the bot. Twilio's REST
client, errors and signatures live in `outcall/twilio_api.py`."""

from typing import Any

from pydantic import BaseModel, Field

from outcall.calls import CallConfig, CallScript
from outcall.phone_numbers import PhoneNumber
from outcall.settings import Settings
from outcall.twilio_api import stream_twiml


class DialoutRequest(CallScript):
    """A request to call one person, with the call's script (see `CallScript`).

    `variables` personalise the call: they fill the prompt's and greeting's `{placeholders}`
    and are listed to the LLM. `metadata` is yours, kept with the call and never spoken.
    """

    to_number: PhoneNumber
    from_number: PhoneNumber | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    agent_id: str | None = Field(default=None, max_length=36, description="run this agent; the fields above override its own")


class DialoutResponse(BaseModel):
    """The call Twilio is now placing."""

    call_sid: str
    status: str = "call_initiated"
    to_number: str
    from_number: str
    call_id: str


def generate_twiml(settings: Settings, config: CallConfig, stream_token: str) -> str:
    """TwiML that connects the answered call to the bot; small, and authenticated by the token.

    Only identifiers travel here; the prompt and variables reach the bot through the
    authenticated call config, so nothing the socket says can decide what the bot says.
    """
    return stream_twiml(settings, config, stream_token)
