"""Test calls: the console's phone in the browser, on the production call path.

A test call is a real call record whose callee is the operator's browser instead of a phone.
The server renders its config exactly as `/dialout` does (same validation, same 422s), writes
the record, starts the greeting's synthesis and issues a stream token — everything Twilio's
`/twiml` request would have caused — and hands the page what Twilio would put in its `start`
message. The page then speaks Twilio's Media Streams protocol to the same `/ws`, where the same
bot claims the call with the token. So what works in the browser works on the phone.

What differs, on purpose: no Twilio REST request is made (there is no Twilio call to place or
hang up; the server names the call `TB…` and ends its record when the socket closes), and
transfer, answering-machine detection and recording are off. The stream token lives 30 s
and opens one stream; the socket needs a console session and the console's own Origin; at most
TEST_CALLS_MAX test calls run at once; test calls stay out of the figures and never count as
a campaign contact's attempt.
"""

import secrets
from typing import Annotated

from fastapi import HTTPException, WebSocket
from pydantic import BaseModel, Field

from outcall import prompts
from outcall.api_errors import unprocessable
from outcall.call_store import CallStore
from outcall.calls import CallScript, render_call_config
from outcall.campaign_store import CampaignError, CampaignStore
from outcall.campaigns import CampaignSettings
from outcall.dashboard.sessions import SESSION_COOKIE, ConsoleSessions, own_origins
from outcall.greetings import GreetingAudio
from outcall.settings import Settings
from outcall.stream_auth import issue_stream_token
from outcall.values import Channel

BROWSER_CALL_TOKEN_SECS = 30  # the page opens its socket at once; the reconciler waits 60 s
BROWSER_NUMBER = "browser"  # a test call's "to" number: nothing can dial it, nothing lists it


class BrowserCallRequest(CallScript):
    """A test call: a script as `/dialout` takes it, or a campaign's (optionally with one of its
    contacts' variables); the fields given here override the campaign's."""

    campaign_id: str | None = Field(default=None, max_length=36)
    contact_id: Annotated[int, Field(ge=1)] | None = Field(default=None, description="a contact of campaign_id")


class BrowserCallStart(BaseModel):
    """What the page needs to open the stream: the values Twilio would send in `start`."""

    call_id: str
    stream_path: str
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str]


async def browser_call_script(body: BrowserCallRequest, campaigns: CampaignStore) -> CallScript:
    """The script the test call runs: the body's own, or the campaign's with the body's fields
    and the contact's variables over it. Raises HTTPException for an unknown campaign or contact."""
    own = body.model_dump(include=set(CallScript.model_fields), exclude_unset=True)
    if body.campaign_id is None:
        if body.contact_id is not None:
            raise unprocessable("contact_id", "contact_id needs the campaign_id it belongs to")
        return CallScript.model_validate(own)
    try:
        campaign = await campaigns.get(body.campaign_id)
    except CampaignError as e:
        raise HTTPException(e.status, e.message)
    variables = {}
    if body.contact_id is not None:
        contact = await campaigns.contact(body.campaign_id, body.contact_id)
        if contact is None:
            raise HTTPException(404, f"Campaign {body.campaign_id} has no contact {body.contact_id}")
        variables = contact.variables
    script = CampaignSettings.model_validate(campaign.settings).script_for({**variables, **body.variables})
    own.pop("variables", None)
    return script.model_copy(update=own)


async def start_browser_call(
    body: BrowserCallRequest, settings: Settings, store: CallStore, campaigns: CampaignStore, greetings: GreetingAudio
) -> BrowserCallStart:
    """Create a test call's record and stream token. Raises HTTPException: test calls disabled
    or not possible here (404/503), too many at once (429), a script that does not render (422)."""
    if not settings.test_calls:
        raise HTTPException(404, "Test calls are disabled on this server (TEST_CALLS=false)")
    secret = settings.secret("stream_secret")
    if not secret:
        raise HTTPException(503, "Test calls need STREAM_SECRET: the stream is authenticated like a phone call's")
    if await store.open_browser_calls() >= settings.test_calls_max:
        raise HTTPException(
            429, f"{settings.test_calls_max} test calls are already running (TEST_CALLS_MAX); hang one up first",
            headers={"Retry-After": "5"},
        )
    script = await browser_call_script(body, campaigns)
    call_id, call_sid = secrets.token_hex(16), "TB" + secrets.token_hex(16)
    from_number = settings.twilio_phone_number or "outcall"
    try:
        config = render_call_config(settings, script, call_id=call_id, to_number=BROWSER_NUMBER, from_number=from_number)
    except prompts.TemplateError as e:
        raise unprocessable(e.field, str(e))
    config = config.model_copy(
        update={"channel": Channel.BROWSER, "transfer_number": None, "recording": False, "voicemail_action": "off"}
    )
    metadata = {"test_of_campaign": body.campaign_id, "contact_id": body.contact_id} if body.campaign_id else {}
    await store.create_browser_call(config, variables=script.variables, metadata=metadata, call_sid=call_sid)
    greetings.prepare(config)
    token = issue_stream_token(
        secret, call_id=call_id, call_sid=call_sid, to_number=config.to_number, from_number=config.from_number,
        ttl_secs=BROWSER_CALL_TOKEN_SECS,
    )
    return BrowserCallStart(
        call_id=call_id,
        stream_path="/ws",
        stream_sid="MZ" + secrets.token_hex(16),
        call_sid=call_sid,
        account_sid=settings.twilio_account_sid or "AC" + "0" * 32,
        custom_parameters={
            "call_id": call_id, "stream_token": token, "to_number": config.to_number, "from_number": config.from_number,
        },
    )


def console_socket(websocket: WebSocket, sessions: ConsoleSessions, settings: Settings) -> bool:
    """Whether a `/ws` handshake comes from a signed-in console page of this server: the session
    cookie, and an Origin of ours (a browser always sends one; another site's page cannot
    borrow the cookie, which is SameSite=Strict, nor fake the Origin)."""
    if not settings.test_calls or sessions.read(websocket.cookies.get(SESSION_COOKIE)) is None:
        return False
    return websocket.headers.get("origin") in own_origins(websocket)
