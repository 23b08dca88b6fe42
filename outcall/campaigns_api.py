"""The campaigns API under `/campaigns`, behind the API key."""

import tempfile
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from outcall.api_errors import error_responses
from outcall.campaign_store import CampaignError, CampaignStore
from outcall.campaigns import CampaignCreate, CampaignList, CampaignSettings, CampaignUpdate, CampaignView
from outcall.contact_file import ImportRefused, RowError
from outcall.contact_import import ContactImport
from outcall.dependencies import CampaignsDep, require_api_key
from outcall.models import Campaign, ContactState

router = APIRouter(tags=["campaigns"], dependencies=[Depends(require_api_key)], responses=error_responses(400, 401, 404, 409, 503))


def _wake_dispatcher(request: Request) -> None:
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if dispatcher:
        dispatcher.wake()


async def _campaign(campaigns: CampaignStore, campaign_id: str) -> Campaign:
    try:
        return await campaigns.get(campaign_id)
    except CampaignError as e:
        raise HTTPException(e.status, e.message)


def _view(campaign: Campaign) -> CampaignView:
    return CampaignView.model_validate(campaign, from_attributes=True)


@router.post("/campaigns", response_model=CampaignView, status_code=201)
async def create_campaign(body: CampaignCreate, campaigns: CampaignsDep):
    """A new campaign, in `draft`: import its contacts, then start it."""
    return _view(await campaigns.create(body.name, body.settings))


@router.get("/campaigns", response_model=CampaignList)
async def list_campaigns(campaigns: CampaignsDep):
    return CampaignList(campaigns=[_view(c) for c in await campaigns.all()])


@router.get("/campaigns/{campaign_id}", response_model=CampaignView)
async def get_campaign(campaign_id: str, campaigns: CampaignsDep):
    """The campaign, its status (and why), and its stats."""
    campaign = await _campaign(campaigns, campaign_id)
    view = _view(campaign)
    view.stats = await campaigns.stats(campaign)
    return view


@router.patch("/campaigns/{campaign_id}", response_model=CampaignView)
async def update_campaign(campaign_id: str, body: CampaignUpdate, campaigns: CampaignsDep):
    """Change the name or settings; the next dials use them. Fields of `settings` not given keep their values."""
    campaign = await _campaign(campaigns, campaign_id)
    settings = None
    if body.settings is not None:
        try:
            settings = CampaignSettings.model_validate({**campaign.settings, **body.settings})
        except ValidationError as e:
            raise RequestValidationError([{**error, "loc": ("body", "settings", *error["loc"])} for error in e.errors()])
    try:
        return _view(await campaigns.update(campaign_id, body.name, settings))
    except CampaignError as e:
        raise HTTPException(e.status, e.message)


@router.delete("/campaigns/{campaign_id}", status_code=204)
async def delete_campaign(campaign_id: str, campaigns: CampaignsDep):
    """Delete a campaign that is not running, and its contacts. Its call records stay."""
    try:
        await campaigns.delete(campaign_id)
    except CampaignError as e:
        raise HTTPException(e.status, e.message)
    return Response(status_code=204)


class ImportReport(BaseModel):
    """What an import did: every bad row is counted in `rejected`; the first 1,000 are listed."""

    imported: int
    rejected: int
    errors: list[RowError]
    errors_truncated: bool


@router.post("/campaigns/{campaign_id}/contacts", response_model=ImportReport)
async def import_contacts(
    campaign_id: str,
    request: Request,
    campaigns: CampaignsDep,
    phone_column: str | None = Query(None, max_length=100, description="default: phone, phone_number, mobile, …"),
    timezone_column: str | None = Query(None, max_length=100, description="default: timezone, time_zone or tz if present"),
    encoding: str | None = Query(None, max_length=40, description="default: UTF-8 (a byte-order mark is honoured)"),
):
    """Import contacts from a CSV file sent as the request body (`Content-Type: text/csv`).
    For files with more errors than fit here, the CLI writes every error to a file."""
    campaign = await _campaign(campaigns, campaign_id)
    if campaign.status in ("stopped", "completed"):
        raise HTTPException(409, f"Campaign {campaign.name!r} is {campaign.status}: create a new campaign for these contacts")
    with tempfile.NamedTemporaryFile(suffix=".csv") as upload:
        async for chunk in request.stream():
            upload.write(chunk)
        upload.flush()
        contact_import = ContactImport(
            campaigns.database, campaign, upload.name, now=campaigns.clock.now(),
            phone_column=phone_column, timezone_column=timezone_column, encoding=encoding,
        )
        try:
            result = await contact_import.run()
        except ImportRefused as e:
            raise HTTPException(422, f"Nothing was imported: {e}")
    _wake_dispatcher(request)
    return ImportReport(imported=result.imported, rejected=result.rejected, errors=result.errors, errors_truncated=result.errors_truncated)


class ContactView(BaseModel):
    id: int
    phone: str
    timezone: str
    variables: dict[str, str]
    state: str
    attempts: int
    next_attempt_at: datetime
    last_end_reason: str | None
    done_reason: str | None
    last_call_id: str | None
    current_call_id: str | None


class ContactList(BaseModel):
    contacts: list[ContactView]
    next_after: int | None  # pass as ?after= for the next page


@router.get("/campaigns/{campaign_id}/contacts", response_model=ContactList)
async def list_contacts(
    campaign_id: str,
    campaigns: CampaignsDep,
    state: ContactState | None = None,
    after: int | None = Query(None, ge=0, description="next_after from the previous page"),
    limit: int = Query(100, ge=1, le=1000),
):
    await _campaign(campaigns, campaign_id)
    contacts = await campaigns.contacts(campaign_id, state, after, limit)
    return ContactList(
        contacts=[ContactView.model_validate(c, from_attributes=True) for c in contacts],
        next_after=contacts[-1].id if len(contacts) == limit else None,
    )


@router.post("/campaigns/{campaign_id}/{action}", response_model=CampaignView)
async def change_campaign_status(
    campaign_id: str, action: Literal["start", "pause", "resume", "stop"], campaigns: CampaignsDep, request: Request
):
    """start (draft → running), pause (running → paused), resume (paused → running), stop (for good).
    Pausing or stopping lets calls in progress finish; nothing new is dialed."""
    try:
        campaign = await campaigns.change_status(campaign_id, action)
    except CampaignError as e:
        raise HTTPException(e.status, e.message)
    _wake_dispatcher(request)
    return _view(campaign)
