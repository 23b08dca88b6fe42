"""Per-call tokens: HMACs binding a stream, and later the bot's reports, to one call.

The server issues a *stream token* when Twilio fetches `/twiml` and sends it as a `<Parameter>`
of the `<Stream>`. It signs the call's id, Twilio's CallSid, both numbers and an expiry, so a
token cannot open a stream for another call, and a leaked one is worthless after it expires.

When the bot claims the call with it, it receives a *report token*, valid for the whole call,
with which it reports the transcript and outcome and asks for a transfer.
"""

import hashlib
import hmac
import time

_VERSION = "v1"


class StreamTokenError(Exception):
    """The token is missing, forged, for another call, or expired."""


def _signature(secret: str, expires: int, fields: tuple[str, ...]) -> str:
    message = "\n".join((_VERSION, str(expires), *fields)).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _issue(secret: str, fields: tuple[str, ...], ttl_secs: int, now: float | None) -> str:
    expires = int((now or time.time()) + ttl_secs)
    return f"{_VERSION}.{expires}.{_signature(secret, expires, fields)}"


def _verify(secret: str, token: str | None, fields: tuple[str, ...], kind: str, now: float | None) -> None:
    if not token:
        raise StreamTokenError(f"no {kind} token")
    try:
        version, expires_text, signature = token.split(".")
        expires = int(expires_text)
    except ValueError:
        raise StreamTokenError(f"malformed {kind} token")
    if version != _VERSION or not hmac.compare_digest(signature, _signature(secret, expires, fields)):
        raise StreamTokenError(f"{kind} token does not match this call")
    if expires < (now or time.time()):
        raise StreamTokenError(f"{kind} token expired")


def issue_stream_token(
    secret: str,
    *,
    call_id: str,
    call_sid: str,
    to_number: str,
    from_number: str,
    ttl_secs: int,
    now: float | None = None,
) -> str:
    """A token for exactly this call's stream, valid for `ttl_secs`."""
    return _issue(secret, (call_id, call_sid, to_number, from_number), ttl_secs, now)


def verify_stream_token(
    secret: str,
    token: str | None,
    *,
    call_id: str,
    call_sid: str,
    to_number: str,
    from_number: str,
    now: float | None = None,
) -> None:
    """Raise StreamTokenError unless `token` was issued for exactly this call and is unexpired."""
    _verify(secret, token, (call_id, call_sid, to_number, from_number), "stream", now)


def issue_report_token(secret: str, *, call_id: str, ttl_secs: int, now: float | None = None) -> str:
    """A token for the call's bot to report to the server, valid for `ttl_secs`."""
    return _issue(secret, ("report", call_id), ttl_secs, now)


def verify_report_token(secret: str, token: str | None, *, call_id: str, now: float | None = None) -> None:
    """Raise StreamTokenError unless `token` is an unexpired report token for this call."""
    _verify(secret, token, ("report", call_id), "report", now)
