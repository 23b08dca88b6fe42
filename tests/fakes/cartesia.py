"""A fake Cartesia: the TTS WebSocket (`/tts/websocket`) and the REST `POST /tts/bytes`.

Each transcript becomes a tone of `SECONDS_PER_CHAR` per character. Over the WebSocket it is
sent as `chunk` messages of base64 PCM at the requested sample rate; a message with
`"continue": false` ends the context with `done`; `{"cancel": true}` drops it. `/tts/bytes`
answers with the whole audio, raw `pcm_s16le` or `pcm_mulaw`, and Cartesia's JSON errors.
Authentication is the `X-API-Key` header; REST requests also need `Cartesia-Version`.
"""

import asyncio
import base64
import json
from http import HTTPStatus
from urllib.parse import urlparse

import numpy as np
import websockets
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from tests.fakes.audio import pcm_to_ulaw, tone_pcm16
from tests.fakes.http import serve as serve_http

SECONDS_PER_CHAR = 0.012
CHUNK_SECS = 0.1


class FakeCartesia:
    """Synthesises every transcript as a tone and records what it was asked to say."""

    def __init__(self, api_key: str):
        self.api_key = api_key
        self.transcripts: list[str] = []
        self.requests: list[dict] = []
        self.connections = 0
        self.rejected = 0
        self.bytes_requests: list[dict] = []  # bodies of accepted POST /tts/bytes
        self.url = ""
        self.api_url = ""
        self._server = None
        self._rest = None

    async def start(self) -> "FakeCartesia":
        self._server = await serve(self._session, "127.0.0.1", 0, process_request=self._check)
        self.url = f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/tts/websocket"
        app = web.Application()
        app.router.add_post("/tts/bytes", self._bytes)
        self._rest, self.api_url = await serve_http(app)
        return self

    async def stop(self):
        self._server.close()
        await self._server.wait_closed()
        await self._rest.cleanup()

    async def _bytes(self, request: web.Request) -> web.Response:
        if request.headers.get("X-API-Key") != self.api_key:
            self.rejected += 1
            return web.json_response({"error": "Invalid API key"}, status=401)
        if not request.headers.get("Cartesia-Version"):
            return web.json_response({"error": "Cartesia-Version header is required"}, status=400)
        try:
            body = await request.json()
            text = body["transcript"]
            body["model_id"], body["voice"]["id"]
            output = body["output_format"]
            encoding, rate = output["encoding"], int(output["sample_rate"])
        except (ValueError, KeyError, TypeError) as e:
            return web.json_response({"error": f"invalid request: {e}"}, status=400)
        if output.get("container") != "raw" or encoding not in ("pcm_s16le", "pcm_mulaw"):
            return web.json_response({"error": f"unsupported output format {output}"}, status=400)
        self.bytes_requests.append(body)
        self.transcripts.append(text)
        audio = tone_pcm16(len(text) * SECONDS_PER_CHAR, rate)
        if encoding == "pcm_mulaw":
            audio = pcm_to_ulaw(np.frombuffer(audio, dtype="<i2"))
        return web.Response(body=audio, content_type="application/octet-stream")

    def spoken_text(self) -> str:
        return " ".join(t.strip() for t in self.transcripts if t.strip())

    def _check(self, connection: ServerConnection, request):
        if urlparse(request.path).path != "/tts/websocket":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if request.headers.get("X-API-Key") != self.api_key:
            self.rejected += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Invalid API key\n")
        return None

    async def _session(self, ws: ServerConnection):
        self.connections += 1
        cancelled: set[str] = set()
        try:
            async for raw in ws:
                message = json.loads(raw)
                context_id = message.get("context_id")
                if message.get("cancel"):
                    cancelled.add(context_id)
                    continue
                self.requests.append(message)
                text = message.get("transcript", "")
                rate = message.get("output_format", {}).get("sample_rate", 24000)
                if text and context_id not in cancelled:
                    self.transcripts.append(text)
                    audio = tone_pcm16(len(text) * SECONDS_PER_CHAR, rate)
                    step = int(CHUNK_SECS * rate) * 2
                    for i in range(0, len(audio), step):
                        chunk = base64.b64encode(audio[i : i + step]).decode()
                        await ws.send(json.dumps({"type": "chunk", "context_id": context_id, "data": chunk,
                                                  "done": False, "status_code": 206}))
                        await asyncio.sleep(0)
                if message.get("continue") is False and context_id not in cancelled:
                    await ws.send(json.dumps({"type": "done", "context_id": context_id, "done": True,
                                              "status_code": 200}))
        except websockets.ConnectionClosed:
            pass
