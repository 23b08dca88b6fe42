"""What the bot needs to run one call, and where the server keeps it until the call starts."""

import asyncio
import time
from dataclasses import dataclass

import aiohttp
from pydantic import BaseModel

from outcall import prompts
from outcall.settings import Settings
from outcall.stream_auth import StreamTokenError, verify_stream_token


class CallConfig(BaseModel):
    """Everything one call's bot needs, rendered by the server at `/dialout`."""

    call_id: str
    to_number: str
    from_number: str
    system_instruction: str
    greeting: str
    wait_for_callee: bool
    max_duration_secs: int


def render_call_config(
    settings: Settings,
    *,
    call_id: str,
    to_number: str,
    from_number: str,
    variables: prompts.Variables,
    prompt: str | None = None,
    greeting: str | None = None,
    wait_for_callee: bool | None = None,
) -> CallConfig:
    """A call's config with its templates filled: the call's own, else BOT_PROMPT/BOT_GREETING,
    else the defaults. A TemplateError's `field` names the template at fault."""
    templates = {
        "prompt": prompt or settings.bot_prompt or prompts.DEFAULT_PROMPT,
        "greeting": greeting or settings.bot_greeting or prompts.DEFAULT_GREETING,
    }
    rendered = {}
    for field, template in templates.items():
        fill = prompts.system_instruction if field == "prompt" else prompts.render
        try:
            rendered[field] = fill(template, variables)
        except prompts.TemplateError as e:
            raise prompts.TemplateError(f"{field} template: {e}", field=field) from None
    return CallConfig(
        call_id=call_id,
        to_number=to_number,
        from_number=from_number,
        system_instruction=rendered["prompt"],
        greeting=rendered["greeting"],
        wait_for_callee=settings.wait_for_callee if wait_for_callee is None else wait_for_callee,
        max_duration_secs=settings.max_call_duration_secs,
    )


class CallClaimError(Exception):
    """The call cannot be handed to a bot; `status` is the HTTP status that says why."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class _PlacedCall:
    config: CallConfig
    created_at: float
    call_sid: str | None = None
    claimed: bool = False


class CallRegistry:
    """Calls placed by this server process, from `/dialout` until a bot claims them.

    A config is handed out once: a replayed stream token finds it already claimed.
    Entries are dropped after `keep_secs`, whether or not the call was answered.
    """

    def __init__(self, keep_secs: float = 3600):
        self._calls: dict[str, _PlacedCall] = {}
        self._keep_secs = keep_secs
        self._lock = asyncio.Lock()

    def add(self, config: CallConfig) -> None:
        now = time.monotonic()
        self._calls = {k: v for k, v in self._calls.items() if now - v.created_at < self._keep_secs}
        self._calls[config.call_id] = _PlacedCall(config=config, created_at=now)

    def forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def answered(self, call_id: str, call_sid: str) -> CallConfig | None:
        """Record Twilio's CallSid for a call when it is answered; None for unknown calls."""
        placed = self._calls.get(call_id)
        if placed is None or (placed.call_sid and placed.call_sid != call_sid):
            return None
        placed.call_sid = call_sid
        return placed.config

    async def claim(self, call_id: str, token: str | None, secret: str) -> CallConfig:
        """Hand a call's config to the bot whose stream token proves it serves that call."""
        async with self._lock:
            placed = self._calls.get(call_id)
            if placed is None or placed.call_sid is None:
                raise CallClaimError(404, f"no answered call {call_id} is waiting for a bot")
            config = placed.config
            try:
                verify_stream_token(
                    secret,
                    token,
                    call_id=call_id,
                    call_sid=placed.call_sid,
                    to_number=config.to_number,
                    from_number=config.from_number,
                )
            except StreamTokenError as e:
                raise CallClaimError(403, str(e))
            if placed.claimed:
                raise CallClaimError(409, f"call {call_id} already has a bot")
            placed.claimed = True
            return config


async def fetch_call_config(server_url: str | None, call_id: str, token: str) -> CallConfig:
    """Claim a call's config from the dial-out server, for a bot running on another host."""
    if not server_url:
        raise CallClaimError(503, "SERVER_URL is not set: the bot cannot fetch its call config")
    url = f"{server_url}/calls/{call_id}/config"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                if response.status != 200:
                    detail = (await response.json(content_type=None) or {}).get("detail", "")
                    raise CallClaimError(response.status, f"server refused the call config: {detail}")
                return CallConfig.model_validate(await response.json())
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise CallClaimError(502, f"cannot fetch call config from {server_url}: {type(e).__name__}")
