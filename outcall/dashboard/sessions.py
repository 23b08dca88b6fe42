"""Signing operators in to the console, and keeping cross-site requests out.

`EventSource` cannot send an API key, and a key must never sit in a page's JavaScript, so the
console signs in once with the API key (or `DASHBOARD_PASSWORD`) and then carries a session
cookie: signed (itsdangerous, with a key derived from the password, so changing the password
signs everyone out), expiring, HttpOnly and SameSite=Strict, Secure over https. The cookie is
only ever accepted by the console's own routes; the JSON API keeps wanting the key.

Every state-changing request must carry the session's CSRF token (a form field or the
`X-CSRF-Token` header) and, when the browser says where it came from, an Origin of this server.
Failed sign-ins are counted per client: after a few, the next attempt must wait, doubling.
"""

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from starlette.requests import HTTPConnection
from itsdangerous import BadSignature, URLSafeTimedSerializer

from outcall.settings import Settings

SESSION_COOKIE = "outcall_console"
FREE_FAILURES = 3  # failed sign-ins allowed before a client has to wait
MAX_WAIT_SECS = 300
FAILURE_MEMORY_SECS = 900


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in operator: `id` names the sign-in in logs and corrections, `csrf` guards changes."""

    id: str
    csrf: str


def console_password(settings: Settings) -> str | None:
    return settings.secret("dashboard_password") or settings.secret("dialout_api_key")


@dataclass
class SignInThrottle:
    """Failed sign-ins per client; a client past `FREE_FAILURES` waits 2, 4, 8 … s between tries."""

    failures: dict[str, list[float]] = field(default_factory=dict)

    def wait_secs(self, client: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        recent = [t for t in self.failures.get(client, []) if now - t < FAILURE_MEMORY_SECS]
        self.failures[client] = recent
        if len(recent) < FREE_FAILURES:
            return 0
        wait = min(2 ** (len(recent) - FREE_FAILURES + 1), MAX_WAIT_SECS)
        return max(0, int(recent[-1] + wait - now + 0.999))

    def failed(self, client: str) -> None:
        self.failures.setdefault(client, []).append(time.monotonic())
        if len(self.failures) > 10_000:  # bounded: forget the oldest clients
            for stale in list(self.failures)[:1000]:
                del self.failures[stale]

    def succeeded(self, client: str) -> None:
        self.failures.pop(client, None)


class ConsoleSessions:
    """Issues and reads session cookies, and counts failed sign-ins."""

    def __init__(self, settings: Settings):
        self.throttle = SignInThrottle()
        password = console_password(settings)
        self.max_age = int(settings.console_session_hours * 3600)
        self._password = password
        key = hmac.new(password.encode(), b"outcall console session", hashlib.sha256).hexdigest() if password else None
        self._serializer = URLSafeTimedSerializer(key, salt="outcall-console") if key else None

    @property
    def configured(self) -> bool:
        return self._serializer is not None

    def password_matches(self, given: str) -> bool:
        return bool(self._password) and hmac.compare_digest(given.encode(), self._password.encode())

    def issue(self) -> tuple[str, ConsoleSession]:
        session = ConsoleSession(id=secrets.token_hex(4), csrf=secrets.token_urlsafe(24))
        return self._serializer.dumps({"id": session.id, "csrf": session.csrf}), session

    def read(self, cookie: str | None) -> ConsoleSession | None:
        if not cookie or not self._serializer:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age)
            return ConsoleSession(id=str(data["id"]), csrf=str(data["csrf"]))
        except (BadSignature, KeyError, TypeError):
            return None


def get_sessions(request: Request) -> ConsoleSessions:
    return request.app.state.console_sessions


SessionsDep = Annotated[ConsoleSessions, Depends(get_sessions)]


def current_session(request: Request, sessions: SessionsDep) -> ConsoleSession | None:
    return sessions.read(request.cookies.get(SESSION_COOKIE))


def require_session(request: Request, session: Annotated[ConsoleSession | None, Depends(current_session)]) -> ConsoleSession:
    """A signed-in operator; a page sends anyone else to the sign-in page, a script gets a 401."""
    if session is None:
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            raise HTTPException(303, "Sign in first", headers={"Location": "/console/sign-in"})
        raise HTTPException(401, "Sign in to the console first")
    request.state.console_session = session  # for the page's CSRF token
    return session


SessionDep = Annotated[ConsoleSession, Depends(require_session)]


WEB_SCHEMES = {"ws": "http", "wss": "https"}  # a WebSocket's page is served over the matching scheme


def own_origins(request: HTTPConnection) -> set[str]:
    """Where this server's pages come from: as this request (or WebSocket) reached it, and as
    SERVER_URL says (behind a TLS-terminating proxy the two differ in scheme)."""
    scheme = WEB_SCHEMES.get(request.url.scheme, request.url.scheme)
    origins = {f"{scheme}://{request.url.netloc}"}
    server_url = request.app.state.settings.server_url
    if server_url:
        parts = urlsplit(server_url)
        origins.add(f"{parts.scheme}://{parts.netloc}")
    return origins


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin in own_origins(request)
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


async def require_csrf(request: Request, session: SessionDep) -> ConsoleSession:
    """A change made from one of the console's own pages by the signed-in operator."""
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        given = (await request.form()).get("csrf_token")
    if not same_origin(request) or not given or not hmac.compare_digest(str(given).encode(), session.csrf.encode()):
        raise HTTPException(403, "This change did not come from a console page (CSRF check failed): reload the page and try again")
    return session


ChangeDep = Annotated[ConsoleSession, Depends(require_csrf)]
