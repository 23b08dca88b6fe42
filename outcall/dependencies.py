"""FastAPI dependencies shared by the server's routes: settings, stores, and auth."""

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from twilio.rest import Client as TwilioClient

from outcall.agent_store import AgentStore
from outcall.call_store import CallStore
from outcall.campaign_store import CampaignStore
from outcall.do_not_call import DoNotCallList
from outcall.settings import Settings
from outcall.stream_auth import StreamTokenError, verify_report_token


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_call_store(request: Request) -> CallStore:
    return request.app.state.call_store


def get_campaigns(request: Request) -> CampaignStore:
    return request.app.state.campaigns


def get_agents(request: Request) -> AgentStore:
    return request.app.state.agents


def get_do_not_call(request: Request) -> DoNotCallList:
    return request.app.state.do_not_call


SettingsDep = Annotated[Settings, Depends(get_settings)]
CallStoreDep = Annotated[CallStore, Depends(get_call_store)]
CampaignsDep = Annotated[CampaignStore, Depends(get_campaigns)]
AgentsDep = Annotated[AgentStore, Depends(get_agents)]
DoNotCallDep = Annotated[DoNotCallList, Depends(get_do_not_call)]


def bearer_token(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def require_api_key(request: Request, settings: SettingsDep) -> None:
    """Accept `X-API-Key: <key>` or `Authorization: Bearer <key>` matching DIALOUT_API_KEY."""
    expected = settings.secret("dialout_api_key")
    if not expected:
        raise HTTPException(503, "The API is disabled: set DIALOUT_API_KEY on the server to enable it")
    given = request.headers.get("X-API-Key") or bearer_token(request)
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            401,
            "Missing or invalid API key: send X-API-Key: <key> or Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )


def require_report_token(call_id: str, request: Request, settings: SettingsDep) -> None:
    """The bot's report token for this call, as `Authorization: Bearer <token>`."""
    secret = settings.secret("stream_secret")
    if not secret:
        raise HTTPException(503, "STREAM_SECRET is not set: bot reports cannot be authenticated")
    try:
        verify_report_token(secret, bearer_token(request), call_id=call_id)
    except StreamTokenError as e:
        raise HTTPException(401, f"Send the call's report token as Authorization: Bearer <token> ({e})")


def require_twilio(twilio: TwilioClient | None) -> TwilioClient:
    """The server's Twilio client, or a 503 saying which settings are missing."""
    if twilio is None:
        raise HTTPException(503, "Twilio is not configured: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
    return twilio
