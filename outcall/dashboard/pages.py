"""The console's routes: its pages, the changes an operator makes, and the live event stream.

Every read goes through the stores and every change through the same functions the JSON API's
routes use (`calls_api`, `campaigns_api`), so the console cannot do anything the API would not,
nor skip its validation. Pages are Jinja2 templates with autoescaping; the only script is
`static/console.js`, which builds the live parts with `textContent`, never `innerHTML`.
"""

import contextlib
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.templating import Jinja2Templates
from loguru import logger

from outcall import agents_api, browser_calls, calls_api, campaigns_api
from outcall.agents import AgentCreate, AgentUpdate
from outcall.browser_calls import BrowserCallRequest, BrowserCallStart
from outcall.call_store import CallFilter, CallStore
from outcall.campaign_store import CampaignError, CampaignStore
from outcall.call_views import call_detail
from outcall.calls_api import CallFilterDep, OutcomeCorrection, checked_cursor
from outcall.campaigns import CampaignCreate, CampaignSettings, CampaignUpdate
from outcall.dashboard.feed import OVERLAP
from outcall.dashboard.sessions import (
    SESSION_COOKIE,
    ChangeDep,
    ConsoleSession,
    SessionDep,
    SessionsDep,
    current_session,
    own_origins,
    same_origin,
)
from outcall.dependencies import AgentsDep, CallStoreDep, CampaignsDep, DoNotCallDep, SettingsDep
from outcall.models import CallRecord, ContactState
from outcall.phone_numbers import to_e164
from outcall.twilio_api import fetch_recording

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    session = getattr(request.state, "console_session", None)
    return templates.TemplateResponse(
        request, name, {"csrf_token": session.csrf if session else "", "signed_in": session is not None, **context},
        status_code=status_code,
    )


def wants_page(request: Request, status_code: int) -> bool:
    """An error on a console page a person is looking at (not a script's request, not a redirect)."""
    return (
        request.url.path.startswith("/console")
        and status_code >= 400
        and "text/html" in request.headers.get("accept", "")
        and "x-csrf-token" not in request.headers
    )


def error_page(request: Request, status_code: int, message: Any) -> HTMLResponse:
    if isinstance(message, list):  # a validation error's details
        message = "; ".join(str(error.get("msg", error)) for error in message)
    referer = request.headers.get("referer", "")
    own_page = any(referer.startswith(origin + "/console") for origin in own_origins(request))
    return page(request, "error.html", status_code=status_code, message=str(message), back=referer if own_page else "/console")


def back_to(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


# --- signing in -------------------------------------------------------------------------------


@router.get("/")
async def root():
    return back_to("/console")


@router.get("/console/sign-in")
async def sign_in_page(request: Request, sessions: SessionsDep):
    if not sessions.configured:
        return page(request, "not_configured.html", status_code=503)
    return page(request, "sign_in.html", error=None)


@router.post("/console/sign-in")
async def sign_in(request: Request, sessions: SessionsDep, password: Annotated[str, Form(max_length=500)] = ""):
    if not sessions.configured:
        return page(request, "not_configured.html", status_code=503)
    if not same_origin(request):
        raise HTTPException(403, "Sign in from the console's own page")
    client = request.client.host if request.client else "?"
    wait = sessions.throttle.wait_secs(client)
    if wait:
        return page(request, "sign_in.html", status_code=429, error=f"Too many failed sign-ins: wait {wait} s, then try again")
    if not sessions.password_matches(password):
        sessions.throttle.failed(client)
        logger.warning(f"Console: failed sign-in from {client}")
        return page(request, "sign_in.html", status_code=401, error="That is not the key (DASHBOARD_PASSWORD, else DIALOUT_API_KEY)")
    sessions.throttle.succeeded(client)
    cookie, session = sessions.issue()
    logger.info(f"Console: operator {session.id} signed in from {client}")
    response = back_to("/console")
    response.set_cookie(
        SESSION_COOKIE, cookie, max_age=sessions.max_age, httponly=True, samesite="strict", secure=over_https(request), path="/",
    )
    return response


def over_https(request: Request) -> bool:
    """Whether the browser reached us over https: directly, or through SERVER_URL's TLS proxy."""
    server_url = request.app.state.settings.server_url or ""
    proxied = server_url.startswith("https://") and request.headers.get("host") == server_url.removeprefix("https://")
    return request.url.scheme == "https" or proxied


@router.post("/console/sign-out")
async def sign_out(session: ChangeDep):
    response = back_to("/console/sign-in")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- overview ---------------------------------------------------------------------------------


def live_call(record: CallRecord, campaign_names: dict[str, str]) -> dict[str, Any]:
    """What the overview shows of a call, and what its live events carry."""
    last = record.transcript[-1] if record.transcript else None
    return {
        "id": record.id,
        "to_number": record.to_number,
        "campaign_id": record.campaign_id,
        "campaign_name": campaign_names.get(record.campaign_id or "", ""),
        "status": record.status,
        "final": record.is_final,
        "created_at": record.created_at.isoformat(),
        "answered_at": record.answered_at.isoformat() if record.answered_at else None,
        "ended_at": record.ended_at.isoformat() if record.ended_at else None,
        "last_line": f"{last['speaker']}: {last['text']}" if last else "",
        "outcome": record.outcome,
        "end_reason": record.end_reason,
    }


async def campaign_names(campaigns: CampaignStore) -> dict[str, str]:
    return {campaign.id: campaign.name for campaign in await campaigns.all()}


async def campaign_progress(campaigns: CampaignStore, only_running: bool = False) -> list[dict[str, Any]]:
    """Each campaign with its contacts done, in progress and in all (running and paused ones only
    if `only_running`), counted in one query; the full stats are on each campaign's page."""
    listed = [c for c in await campaigns.all() if not only_running or c.status in ("running", "paused")]
    progress = await campaigns.progress([c.id for c in listed]) if listed else {}
    rows = []
    for campaign in listed:
        states = progress[campaign.id]
        rows.append({
            "id": campaign.id, "name": campaign.name, "status": campaign.status, "status_reason": campaign.status_reason,
            "contacts": sum(states.values()), "done": states.get(ContactState.DONE.value, 0),
            "in_progress": states.get(ContactState.DIALING.value, 0) + states.get(ContactState.CALLING.value, 0),
        })
    return rows


@router.get("/console")
async def overview(request: Request, store: CallStoreDep, campaigns: CampaignsDep, sessions: SessionsDep,
                   session: Annotated[ConsoleSession | None, Depends(current_session)]):
    if not sessions.configured:
        return page(request, "not_configured.html", status_code=503)
    if session is None:
        return back_to("/console/sign-in")
    request.state.console_session = session
    names = await campaign_names(campaigns)
    summary = await request.app.state.call_feed.summary()
    return page(
        request, "overview.html",
        calls=[live_call(r, names) for r in await store.in_progress()],
        figures=summary["figures"],
        campaigns=summary["campaigns"],
        since=datetime.now().astimezone().isoformat(),
    )


# --- calls ------------------------------------------------------------------------------------


@router.get("/console/calls")
async def calls_page(request: Request, session: SessionDep, store: CallStoreDep, where: CallFilterDep,
                     cursor: Annotated[str | None, Depends(checked_cursor)]):
    records, next_cursor = await store.list(where, cursor=cursor, limit=50)
    filters = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
    return page(request, "calls.html", calls=records, filters=filters, next_cursor=next_cursor,
                query=lambda **extra: urlencode({**filters, **extra}))


@router.get("/console/calls/export.csv")
async def export_calls(session: SessionDep, store: CallStoreDep, where: CallFilterDep, settings: SettingsDep):
    return calls_api.calls_csv_response(store, where, settings)


@router.get("/console/calls/{call_id}")
async def call_page(call_id: str, request: Request, session: SessionDep, store: CallStoreDep, settings: SettingsDep,
                    campaigns: CampaignsDep):
    record = await calls_api.get_call(call_id, store)
    campaign = None
    if record.campaign_id:
        with contextlib.suppress(CampaignError):  # deleted since; its calls stay
            campaign = await campaigns.get(record.campaign_id)
    return page(request, "call.html", call=record, outcomes=settings.call_outcomes, campaign=campaign)


@router.post("/console/calls/{call_id}/hangup")
async def hang_up(call_id: str, request: Request, session: ChangeDep, store: CallStoreDep):
    await calls_api.hang_up_call(store, request.app.state.twilio, call_id)
    return back_to(f"/console/calls/{call_id}")


@router.post("/console/calls/{call_id}/outcome")
async def correct_outcome(
    call_id: str, session: ChangeDep, store: CallStoreDep, settings: SettingsDep,
    outcome: Annotated[str, Form(max_length=32)], notes: Annotated[str, Form(max_length=2000)] = "",
):
    body = OutcomeCorrection(outcome=outcome, notes=notes or None)
    await calls_api.correct_outcome(store, settings, call_id, body, by=f"console:{session.id}")
    return back_to(f"/console/calls/{call_id}")


@router.get("/console/calls/{call_id}/recording")
async def recording(call_id: str, request: Request, session: SessionDep, store: CallStoreDep):
    """The recording, fetched from Twilio with the server's credentials: none reach the browser."""
    record = await calls_api.get_call(call_id, store)
    if not record.recording_url:
        raise HTTPException(404, "This call has no recording")
    audio = await fetch_recording(request.app.state.twilio, record.recording_url)
    return Response(audio, media_type="audio/wav", headers={"Cache-Control": "private, no-store"})


# --- agents ---------------------------------------------------------------------------------


EXAMPLE_PROFILE = {
    "prompt": "You call {first_name} on behalf of Acme Clinic to book a check-up.",
    "greeting": "Hi {first_name}, this is Acme Clinic calling about your check-up.",
    "outcomes": ["booked", "not_booked", "callback_requested"],
}


@router.get("/console/agents")
async def agents_page(request: Request, session: SessionDep, agents: AgentsDep):
    return page(request, "agents.html", agents=await agents.all(), example=EXAMPLE_PROFILE)


@router.post("/console/agents", status_code=201)
async def create_agent(body: AgentCreate, session: ChangeDep, agents: AgentsDep):
    view = await agents_api.create_agent(body, agents)
    return {"id": view.id, "location": f"/console/agents/{view.id}"}


@router.get("/console/agents/{agent_id}")
async def agent_page(agent_id: str, request: Request, session: SessionDep, agents: AgentsDep, store: CallStoreDep):
    agent = await agents_api.get_agent(agent_id, agents)
    calls, _ = await store.list(CallFilter(agent_id=agent_id), limit=20)
    return page(request, "agent.html", agent=agent, versions=await agents.versions(agent_id), calls=calls,
                results=await store.agent_results(agent_id))


@router.post("/console/agents/{agent_id}")
async def update_agent(agent_id: str, body: AgentUpdate, session: ChangeDep, agents: AgentsDep):
    """The page sends the whole profile: a field taken out of it returns to the server's setting."""
    if body.profile is not None:
        current = (await agents_api.get_agent(agent_id, agents)).profile.model_dump(exclude_none=True)
        body = body.model_copy(update={"profile": {**dict.fromkeys(current), **body.profile}})
    await agents_api.change_agent(agents, agent_id, body)
    return {"location": f"/console/agents/{agent_id}"}


@router.post("/console/agents/{agent_id}/delete")
async def delete_agent(agent_id: str, session: ChangeDep, agents: AgentsDep):
    await agents_api.delete_agent(agent_id, agents)
    return back_to("/console/agents")


# --- the test phone (outcall/browser_calls.py) -------------------------------------------------


@router.get("/console/test-call")
async def test_call_page(request: Request, session: SessionDep, settings: SettingsDep, campaigns: CampaignsDep,
                         campaign_id: str | None = Query(None, max_length=36)):
    """Talk with the bot from this browser; with `campaign_id`, as one of that campaign's contacts."""
    campaign, contacts = None, []
    if campaign_id:
        try:
            campaign = await campaigns.get(campaign_id)
        except CampaignError as e:
            raise HTTPException(e.status, e.message)
        contacts = await campaigns.contacts(campaign_id, None, None, 200)
    return page(request, "test_call.html", campaigns=await campaigns.all(), campaign=campaign, contacts=contacts,
                enabled=settings.test_calls, stream_secret=bool(settings.secret("stream_secret")))


@router.post("/console/test-calls", status_code=201, response_model=BrowserCallStart)
async def create_test_call(body: BrowserCallRequest, request: Request, session: ChangeDep, settings: SettingsDep,
                           store: CallStoreDep, campaigns: CampaignsDep):
    """A test call's record and stream token: what the page puts in its `start` message."""
    if request.app.state.drain.draining:
        raise HTTPException(503, "This server is shutting down; try again in a moment", headers={"Retry-After": "5"})
    start = await browser_calls.start_browser_call(body, settings, store, campaigns, request.app.state.greetings)
    logger.info(f"Console: operator {session.id} started test call {start.call_id}")
    return start


# --- live events ------------------------------------------------------------------------------


def _since(last_event_id: str | None, since: datetime | None) -> datetime | None:
    if last_event_id:
        try:
            return datetime.fromisoformat(last_event_id)
        except ValueError:
            return None
    return since


@router.get("/console/events", response_class=EventSourceResponse)
async def events(
    request: Request, session: SessionDep, store: CallStoreDep, campaigns: CampaignsDep,
    call_id: str | None = Query(None, max_length=36),
    since: datetime | None = Query(None),
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
):
    """Changed calls as `call` events (the whole record when the page shows one call), and the
    overview's figures as `figures` after changes. Resumes from `Last-Event-ID`."""
    feed = request.app.state.call_feed
    names = await campaign_names(campaigns) if call_id is None else {}

    async def event(record: CallRecord) -> ServerSentEvent:
        if call_id:
            data = call_detail(record).model_dump(mode="json")
        else:
            if record.campaign_id and record.campaign_id not in names:
                names.update(await campaign_names(campaigns))  # a campaign created since
            data = live_call(record, names)
        return ServerSentEvent(event="call", data=data, id=record.updated_at.isoformat(), retry=1000)

    start = _since(last_event_id, since)
    if start is not None:
        for record in await store.changed_since(start - OVERLAP, limit=500):
            if call_id in (None, record.id):
                yield await event(record)
    async with feed.listen() as queue:
        while (item := await queue.get()) is not None:
            kind, data = item
            if kind == "calls":
                for record in data:
                    if call_id in (None, record.id):
                        yield await event(record)
            elif call_id is None:
                yield ServerSentEvent(event="figures", data=data)


async def overview_summary(store: CallStore, campaigns: CampaignStore) -> dict[str, Any]:
    """What the overview redraws after changes: today's figures and the running campaigns."""
    figures = await store.figures(calls_api.start_of_today())
    return {"figures": asdict(figures), "campaigns": await campaign_progress(campaigns, only_running=True)}


# --- campaigns --------------------------------------------------------------------------------


@router.get("/console/campaigns")
async def campaigns_page(request: Request, session: SessionDep, campaigns: CampaignsDep):
    return page(request, "campaigns.html", campaigns=await campaign_progress(campaigns), defaults=CampaignSettings(timezone="UTC").model_dump(mode="json"))


@router.post("/console/campaigns", status_code=201)
async def create_campaign(body: CampaignCreate, session: ChangeDep, campaigns: CampaignsDep):
    view = await campaigns_api.create_campaign(body, campaigns)
    return {"id": view.id, "location": f"/console/campaigns/{view.id}"}


@router.get("/console/campaigns/{campaign_id}")
async def campaign_page(campaign_id: str, request: Request, session: SessionDep, campaigns: CampaignsDep, store: CallStoreDep,
                        state: ContactState | None = None):
    view = await campaigns_api.get_campaign(campaign_id, campaigns)
    contacts = await campaigns.contacts(campaign_id, state, None, 200)
    calls, _ = await store.list(CallFilter(campaign_id=campaign_id), limit=20)
    return page(request, "campaign.html", campaign=view, contacts=contacts, state=state, calls=calls)


@router.post("/console/campaigns/{campaign_id}/settings")
async def update_campaign(campaign_id: str, body: CampaignUpdate, session: ChangeDep, campaigns: CampaignsDep):
    await campaigns_api.update_campaign(campaign_id, body, campaigns)
    return {"location": f"/console/campaigns/{campaign_id}"}


@router.post("/console/campaigns/{campaign_id}/contacts")
async def import_contacts(campaign_id: str, request: Request, session: ChangeDep, campaigns: CampaignsDep,
                          phone_column: str | None = Query(None, max_length=100)):
    return await campaigns_api.import_contacts(
        campaign_id, request, campaigns, phone_column=phone_column, timezone_column=None, encoding=None
    )


@router.post("/console/campaigns/{campaign_id}/delete")
async def delete_campaign(campaign_id: str, session: ChangeDep, campaigns: CampaignsDep):
    await campaigns_api.delete_campaign(campaign_id, campaigns)
    return back_to("/console/campaigns")


@router.post("/console/campaigns/{campaign_id}/{action}")
async def change_campaign(campaign_id: str, action: Literal["start", "pause", "resume", "stop"], request: Request,
                          session: ChangeDep, campaigns: CampaignsDep):
    await campaigns_api.change_campaign_status(campaign_id, action, campaigns, request)
    return back_to(f"/console/campaigns/{campaign_id}")


# --- do-not-call ------------------------------------------------------------------------------


@router.get("/console/do-not-call")
async def do_not_call_page(request: Request, session: SessionDep, do_not_call: DoNotCallDep,
                           phone: str | None = Query(None, max_length=40), after: str | None = Query(None, max_length=20)):
    found, error = None, None
    if phone:
        try:
            number = to_e164(phone)
            found = (number, await do_not_call.get(number))
        except ValueError as e:
            error = str(e)
    entries = await do_not_call.page(after, 100)
    return page(request, "do_not_call.html", entries=entries, found=found, error=error, phone=phone or "",
                next_after=entries[-1].phone if len(entries) == 100 else None)


@router.post("/console/do-not-call")
async def add_to_do_not_call(request: Request, session: ChangeDep, do_not_call: DoNotCallDep,
                             phone: Annotated[str, Form(max_length=40)], reason: Annotated[str, Form(max_length=500)] = ""):
    try:
        number = to_e164(phone)
    except ValueError as e:
        entries = await do_not_call.page(None, 100)
        return page(request, "do_not_call.html", status_code=422, entries=entries, found=None, error=str(e), phone=phone,
                    next_after=None)
    await do_not_call.add([number], reason or None, "console")
    return back_to(f"/console/do-not-call?{urlencode({'phone': number})}")


@router.post("/console/do-not-call/remove")
async def remove_from_do_not_call(session: ChangeDep, do_not_call: DoNotCallDep, phone: Annotated[str, Form(max_length=20)]):
    await do_not_call.remove(phone)
    return back_to("/console/do-not-call")


# --- settings ---------------------------------------------------------------------------------


@router.get("/console/settings")
async def settings_page(request: Request, session: SessionDep, settings: SettingsDep):
    return page(request, "settings.html", missing=settings.missing_settings(), settings=settings)
