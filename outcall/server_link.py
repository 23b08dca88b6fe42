"""How a bot reaches the dial-out server: claim its call, report on it, ask for a transfer.

A bot on Pipecat Cloud uses `HttpServerLink` (the server's `/calls/{id}/…` endpoints, with the
stream token, then the report token). A bot inside the server's own process is handed a link
that calls the same code directly, so it keeps working while the server shuts down.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp

from outcall.calls import CallClaimError, CallConfig
from outcall.reports import CallReport, TransferRequest


class ReportNotDelivered(Exception):
    """The server did not take the report; `retry` says whether trying again can help."""

    def __init__(self, message: str, retry: bool):
        super().__init__(message)
        self.retry = retry


class ServerLink(Protocol):
    async def claim(self, call_id: str, stream_token: str) -> CallConfig: ...

    async def report(self, config: CallConfig, report: CallReport) -> None: ...

    async def transfer(self, config: CallConfig, note: TransferRequest) -> bool: ...

    def call_started(self, call_id: str, end_call: Callable[[], Awaitable[None]]) -> None:
        """The bot's conversation began; `end_call` ends it politely (the server uses it to drain)."""

    def call_finished(self, call_id: str) -> None:
        """The bot's conversation and its final report are done."""


class HttpServerLink:
    """The dial-out server at SERVER_URL, over HTTP."""

    def __init__(self, server_url: str | None):
        self.server_url = server_url

    def _url(self, call_id: str, action: str) -> str:
        if not self.server_url:
            raise CallClaimError(503, "SERVER_URL is not set: the bot cannot reach the dial-out server")
        return f"{self.server_url}/calls/{call_id}/{action}"

    async def claim(self, call_id: str, stream_token: str) -> CallConfig:
        url = self._url(call_id, "config")
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                async with session.get(url, headers={"Authorization": f"Bearer {stream_token}"}) as response:
                    if response.status != 200:
                        detail = (await response.json(content_type=None) or {}).get("detail", "")
                        raise CallClaimError(response.status, f"server refused the call config: {detail}")
                    return CallConfig.model_validate(await response.json())
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise CallClaimError(502, f"cannot fetch call config from {self.server_url}: {type(e).__name__}")

    async def report(self, config: CallConfig, report: CallReport) -> None:
        try:
            url = self._url(config.call_id, "report")
        except CallClaimError as e:
            raise ReportNotDelivered(e.reason, retry=False)
        headers = {"Authorization": f"Bearer {config.report_token}"}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                async with session.post(url, json=json.loads(report.model_dump_json()), headers=headers) as response:
                    if response.status >= 400:
                        retry = response.status >= 500 or response.status == 429
                        raise ReportNotDelivered(f"HTTP {response.status}: {await response.text()}", retry)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ReportNotDelivered(type(e).__name__, retry=True)

    def call_started(self, call_id: str, end_call: Callable[[], Awaitable[None]]) -> None:
        pass  # a bot on Pipecat Cloud is not stopped by the server's restarts

    def call_finished(self, call_id: str) -> None:
        pass

    async def transfer(self, config: CallConfig, note: TransferRequest) -> bool:
        headers = {"Authorization": f"Bearer {config.report_token}"}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
                url = self._url(config.call_id, "transfer")
                async with session.post(url, headers=headers, json=note.model_dump()) as response:
                    return response.status == 200
        except (aiohttp.ClientError, TimeoutError, CallClaimError):
            return False
