"""The do-not-call list under `/do-not-call`, behind the API key: numbers no campaign and no
`/dialout` may dial (outcall/do_not_call.py)."""

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel

from outcall.api_errors import error_responses
from outcall.dependencies import DoNotCallDep, require_api_key
from outcall.do_not_call import DoNotCallAdd, DoNotCallEntry
from outcall.phone_numbers import PhoneNumber

router = APIRouter(
    prefix="/do-not-call", tags=["do-not-call"], dependencies=[Depends(require_api_key)],
    responses=error_responses(400, 401, 404, 503),
)


class DoNotCallPage(BaseModel):
    entries: list[DoNotCallEntry]
    next_after: str | None


@router.post("", status_code=204)
async def add_to_do_not_call(body: DoNotCallAdd, do_not_call: DoNotCallDep):
    """Add numbers; adding one already there changes nothing."""
    await do_not_call.add(body.phones, body.reason, "api")
    return Response(status_code=204)


@router.get("", response_model=DoNotCallPage)
async def list_do_not_call(
    do_not_call: DoNotCallDep, after: str | None = Query(None, max_length=20), limit: int = Query(100, ge=1, le=1000)
):
    entries = await do_not_call.page(after, limit)
    return DoNotCallPage(
        entries=[DoNotCallEntry.model_validate(e, from_attributes=True) for e in entries],
        next_after=entries[-1].phone if len(entries) == limit else None,
    )


@router.get("/{phone}", response_model=DoNotCallEntry)
async def get_do_not_call(phone: str, do_not_call: DoNotCallDep):
    entry = await do_not_call.get(phone)
    if entry is None:
        raise HTTPException(404, f"{phone} is not on the do-not-call list")
    return DoNotCallEntry.model_validate(entry, from_attributes=True)


@router.delete("/{phone}", status_code=204)
async def remove_from_do_not_call(phone: PhoneNumber, do_not_call: DoNotCallDep):
    if not await do_not_call.remove(phone):
        raise HTTPException(404, f"{phone} is not on the do-not-call list")
    return Response(status_code=204)
