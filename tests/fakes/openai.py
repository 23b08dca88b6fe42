"""A fake OpenAI-compatible chat-completions server: `POST /v1/chat/completions`, as OpenAI and the
self-hosted servers that copy its API (vLLM, llama.cpp, Ollama…) answer it.

Streaming requests (the conversation) are recorded in `requests`; `respond(request) -> list of
parts` decides the reply, with the Gemini fake's parts — `{"text": …}` or `{"functionCall":
{"name": …, "args": {…}}}` — so the same scripted LLMs drive both. The reply streams as
server-sent `chat.completion.chunk` events: the role, the text a few words per chunk, each tool
call as OpenAI splits it (id and name first, then the arguments), `finish_reason`, a usage chunk
when `stream_options.include_usage` asks for one, and `data: [DONE]`.

Plain requests (the post-call summary, with `response_format` a JSON schema) are recorded in
`summary_requests`; `summarise(request) -> dict` is the JSON object the model returns.
Authentication is `Authorization: Bearer <key>`.
"""

import json
import time
import uuid
from collections.abc import Callable

from aiohttp import web

from tests.fakes.gemini import answer_for_schema
from tests.fakes.http import serve

Respond = Callable[[dict], list[dict]]
Summarise = Callable[[dict], dict]


def plain_summary(request: dict) -> dict:
    return answer_for_schema(request.get("response_format", {}).get("json_schema", {}).get("schema", {}))


class FakeOpenAI:
    """Answers every chat completion with `respond(request)` (streamed) or `summarise(request)`."""

    def __init__(self, api_key: str, respond: Respond, summarise: Summarise = plain_summary):
        self.api_key = api_key
        self.respond = respond
        self.summarise = summarise
        self.requests: list[dict] = []
        self.summary_requests: list[dict] = []
        self.rejected = 0
        self.base_url = ""
        self._runner = None

    async def start(self) -> "FakeOpenAI":
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner, root = await serve(app)
        self.base_url = f"{root}/v1"
        return self

    async def stop(self):
        await self._runner.cleanup()

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.rejected += 1
            return web.json_response(
                {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                           "param": None, "code": "invalid_api_key"}},
                status=401,
            )
        body = await request.json()
        if not body.get("model") or not isinstance(body.get("messages"), list):
            return web.json_response(
                {"error": {"message": "model and messages are required", "type": "invalid_request_error",
                           "param": None, "code": None}},
                status=400,
            )
        if not body.get("stream"):
            self.summary_requests.append(body)
            return web.json_response({
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": json.dumps(self.summarise(body))}}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70},
            })
        self.requests.append(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        async def send(delta: dict | None, finish_reason: str | None = None, usage: dict | None = None) -> None:
            chunk = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": body["model"],
                     "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            if usage:
                chunk["usage"] = usage
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        calls = 0
        for part in self.respond(body):
            if "text" in part:
                words = part["text"].split(" ")
                for i in range(0, len(words), 3):
                    await send({"content": " ".join(words[i : i + 3]) + (" " if i + 3 < len(words) else "")})
            elif "functionCall" in part:
                call = part["functionCall"]
                await send({"tool_calls": [{"index": calls, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                                            "function": {"name": call["name"], "arguments": ""}}]})
                await send({"tool_calls": [{"index": calls, "function": {"arguments": json.dumps(call.get("args", {}))}}]})
                calls += 1
        await send({}, "tool_calls" if calls else "stop")
        if body.get("stream_options", {}).get("include_usage"):
            await send(None, usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
