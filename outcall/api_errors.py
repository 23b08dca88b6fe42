"""The error responses the API documents: every status a route can answer with, and its body.

FastAPI documents only success and 422 by itself; clients (and the schema fuzzer in the suite)
need the rest to know what to expect. Every error body has a `detail` a person can act on.
"""

from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel


class ErrorDetail(BaseModel):
    """An error: `detail` says what went wrong and what to do; Twilio's refusals add its code."""

    detail: str | list[dict[str, Any]]
    twilio_code: int | None = None
    more_info: str | None = None


DESCRIPTIONS = {
    400: "The body is not valid JSON, a parameter is malformed, or Twilio refused (see twilio_code)",
    401: "No key or token, or a wrong one",
    403: "Missing or invalid X-Twilio-Signature",
    404: "No such call, campaign or number",
    409: "Not possible in the current state (already ended, already claimed, on the do-not-call list…)",
    429: "Twilio's rate limit",
    502: "Twilio rejected the server's credentials or could not be reached",
    503: "Not configured for this (see detail), or the server is shutting down (see Retry-After)",
}


def unprocessable(field: str, message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, naming the body field at fault."""
    return HTTPException(422, [{"loc": ["body", field], "msg": message, "type": "value_error"}])


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router that can answer with `statuses`."""
    return {status: {"model": ErrorDetail, "description": DESCRIPTIONS[status]} for status in statuses}
