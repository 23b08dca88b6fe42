"""A fake Cartesia TTS WebSocket (`/tts/websocket`).

Each transcript becomes a tone of `SECONDS_PER_CHAR` per character, sent as `chunk` messages
of base64 PCM at the requested sample rate; a message with `"continue": false` ends the
context with `done`; `{"cancel": true}` drops it. Authentication is the `X-API-Key` header.
"""

import asyncio
import base64
import json
from http import HTTPStatus
from urllib.parse import urlparse

import websockets
from websockets.asyncio.server import ServerConnection, serve

from tests.fakes.audio import tone_pcm16

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
        self.url = ""
        self._server = None

    async def start(self) -> "FakeCartesia":
        self._server = await serve(self._session, "127.0.0.1", 0, process_request=self._check)
        self.url = f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/tts/websocket"
        return self

    async def stop(self):
        self._server.close()
        await self._server.wait_closed()

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
