"""A fake Gemini API: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` and `:generateContent`.

Streaming requests (the conversation) are recorded in `requests`; `respond(request) -> list of
parts` decides the reply, where a part is `{"text": …}` or `{"functionCall": {"name": …, "args":
{…}}}`. The reply streams as server-sent events, one part per event, the last with
`finishReason` and `usageMetadata`.

`first_token_delay` is how long a streamed answer takes to start (a real model's time to first
token: a few hundred milliseconds).

Plain requests (the post-call summary, asking for JSON) are recorded in `summary_requests`;
`summarise(request) -> dict` is the JSON object the model returns as its text (a `str` is
returned as it is, to play a model that breaks its schema).
"""

import asyncio
import json
from collections.abc import Callable

from aiohttp import web

from tests.fakes.http import serve

Respond = Callable[[dict], list[dict]]
Summarise = Callable[[dict], dict]


def answer_for_schema(schema: dict) -> dict:
    """A summary that fills in what a post-call JSON schema requires, each analysis enum with
    its first option."""
    answer = {"summary": "The callee spoke with the agent."}
    if "outcome" in schema.get("required", []):
        answer["outcome"] = "other"
    if "analysis" in schema.get("properties", {}):
        fields = schema["properties"]["analysis"].get("properties", {})
        answer["analysis"] = {name: prop["enum"][0] for name, prop in fields.items() if "enum" in prop}
    return answer


def plain_summary(request: dict) -> dict:
    return answer_for_schema(request.get("generationConfig", {}).get("responseJsonSchema", {}))


def _text(content) -> str:
    """An OpenAI message's content: a string, or a list of typed parts."""
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def last_user_text(request: dict) -> str:
    """The latest thing the callee said, in a Gemini request or an OpenAI one (tests/fakes/openai.py)."""
    for content in reversed(request.get("contents", [])):
        if content.get("role") == "user":
            return " ".join(p.get("text", "") for p in content.get("parts", []))
    for message in reversed(request.get("messages", [])):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def system_text(request: dict) -> str:
    """The system instruction, in a Gemini request or an OpenAI one."""
    if "messages" in request:
        return " ".join(_text(m.get("content")) for m in request["messages"] if m.get("role") in ("system", "developer"))
    return " ".join(p.get("text", "") for p in request.get("systemInstruction", {}).get("parts", []))


class FakeGemini:
    """Answers every generation request with `respond(request)`."""

    def __init__(self, api_key: str, respond: Respond, summarise: Summarise = plain_summary):
        self.api_key = api_key
        self.respond = respond
        self.summarise = summarise
        self.requests: list[dict] = []
        self.first_token_delay = 0.0
        self.summary_requests: list[dict] = []
        self.paths: list[str] = []  # every request's path, which names the model
        self.base_url = ""
        self._runner = None

    async def start(self) -> "FakeGemini":
        app = web.Application()
        app.router.add_post("/{version}/models/{model_action}", self._generate)
        self._runner, self.base_url = await serve(app)
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
        self.paths.append(request.path)
        action = request.match_info["model_action"].rpartition(":")[2]
        if action == "generateContent":
            body = await request.json()
            self.summary_requests.append(body)
            answer = self.summarise(body)
            text = answer if isinstance(answer, str) else json.dumps(answer)
            return web.json_response({
                "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP",
                                "index": 0}],
                "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 20, "totalTokenCount": 70},
                "modelVersion": "fake-gemini",
            })
        if action != "streamGenerateContent":
            return web.json_response({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}, status=404)
        body = await request.json()
        self.requests.append(body)
        parts = self.respond(body)
        await asyncio.sleep(self.first_token_delay)
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
