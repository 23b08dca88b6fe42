"""Per-call stream tokens: an HMAC binding a stream to one call, checked before the bot starts.

The server issues a token when Twilio fetches `/twiml` and sends it as a `<Parameter>` of the
`<Stream>`. The token signs the call's id, Twilio's CallSid, both numbers and an expiry, so a
token cannot open a stream for another call, and a leaked one is worthless after it expires.
"""

import hashlib
import hmac
import time

_VERSION = "v1"


class StreamTokenError(Exception):
    """The stream's token is missing, forged, for another call, or expired."""


def _signature(secret: str, expires: int, fields: tuple[str, ...]) -> str:
    message = "\n".join((_VERSION, str(expires), *fields)).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


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
    """A token for exactly this call, valid for `ttl_secs`."""
    expires = int((now or time.time()) + ttl_secs)
    signature = _signature(secret, expires, (call_id, call_sid, to_number, from_number))
    return f"{_VERSION}.{expires}.{signature}"


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
    if not token:
        raise StreamTokenError("no stream token")
    try:
        version, expires_text, signature = token.split(".")
        expires = int(expires_text)
    except ValueError:
        raise StreamTokenError("malformed stream token")
    expected = _signature(secret, expires, (call_id, call_sid, to_number, from_number))
    if version != _VERSION or not hmac.compare_digest(signature, expected):
        raise StreamTokenError("stream token does not match this call")
    if expires < (now or time.time()):
        raise StreamTokenError("stream token expired")
