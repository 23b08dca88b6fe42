"""A fake Gemini API: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`.

Each request is recorded; `respond(request) -> list of parts` decides the reply, where a part
is `{"text": …}` or `{"functionCall": {"name": …, "args": {…}}}`. The reply streams as
server-sent events, one part per event, the last with `finishReason` and `usageMetadata`.
"""

import json
from collections.abc import Callable

from aiohttp import web

Respond = Callable[[dict], list[dict]]


def last_user_text(request: dict) -> str:
    for content in reversed(request.get("contents", [])):
        if content.get("role") == "user":
            return " ".join(p.get("text", "") for p in content.get("parts", []))
    return ""


def system_text(request: dict) -> str:
    return " ".join(p.get("text", "") for p in request.get("systemInstruction", {}).get("parts", []))


class FakeGemini:
    """Answers every generation request with `respond(request)`."""

    def __init__(self, api_key: str, respond: Respond):
        self.api_key = api_key
        self.respond = respond
        self.requests: list[dict] = []
        self.base_url = ""
        self._runner = None

    async def start(self) -> "FakeGemini":
        app = web.Application()
        app.router.add_post("/{version}/models/{model_action}", self._generate)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self):
        await self._runner.cleanup()

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("x-goog-api-key") != self.api_key:
            return web.json_response(
                {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                           "status": "INVALID_ARGUMENT"}},
                status=400,
            )
        if not request.match_info["model_action"].endswith(":streamGenerateContent"):
            return web.json_response({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}, status=404)
        body = await request.json()
        self.requests.append(body)
        parts = self.respond(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i, part in enumerate(parts):
            chunk = {"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}],
                     "modelVersion": "fake-gemini"}
            if i == len(parts) - 1:
                chunk["candidates"][0]["finishReason"] = "STOP"
                chunk["usageMetadata"] = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
            await response.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
        await response.write_eof()
        return response
