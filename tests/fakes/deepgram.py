"""A fake Deepgram live transcription server (`GET /v1/listen`, WebSocket).

It hears speech by its energy (per 20 ms, whatever size the client's messages are), like an
endpointing recogniser: while the callee speaks it sends interim `Results` (`is_final: false`)
0.3 s into the speech and then every second of it, as Deepgram does with `interim_results`; at
`Finalize` (or after 500 ms of silence) it sends the final `Results`. Each utterance is
transcribed as the next entry of `transcripts`: a string, the interims' text and the final's, or
a pair `(interim, final)` for an utterance whose last words the recogniser revises when it
finalizes. `finalize_delay` is how long it takes to answer `Finalize` (Deepgram: ~50–150 ms);
`finals` records when each final was sent. Authentication is `Authorization: Token <key>`.
"""

import asyncio
import json
import time
import uuid
from http import HTTPStatus
from urllib.parse import parse_qs, urlparse

import numpy as np
import websockets
from websockets.asyncio.server import ServerConnection, serve

SPEECH_RMS = 300
ENDPOINTING_SECS = 0.5
LEVEL_SECS = 0.02
FIRST_INTERIM_SECS = 0.3
INTERIM_EVERY_SECS = 1.0

Transcript = str | tuple[str, str]  # the text, or (what the interims say, what the final says)


class FakeDeepgram:
    """Transcribes each utterance it hears as the next text in `transcripts`."""

    def __init__(self, api_key: str):
        self.api_key = api_key
        self.transcripts: list[Transcript] = []
        self.default_transcript = "hello"
        self.finalize_delay = 0.0
        self.finals: list[tuple[float, str]] = []  # (time.monotonic() when sent, text)
        self.connections: list[dict] = []  # query parameters of each accepted connection
        self.messages: list[list[str | int]] = []  # per connection: each audio message's bytes, or a control's type
        self.rejected = 0
        self.base_url = ""
        self._server = None

    async def start(self) -> "FakeDeepgram":
        self._server = await serve(self._session, "127.0.0.1", 0, process_request=self._check)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"ws://127.0.0.1:{port}"
        return self

    async def stop(self):
        self._server.close()
        await self._server.wait_closed()

    def _check(self, connection: ServerConnection, request):
        if urlparse(request.path).path != "/v1/listen":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            self.rejected += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Invalid credentials\n")
        return None

    def _upcoming(self) -> tuple[str, str]:
        """(interim, final) for the utterance being heard."""
        upcoming = self.transcripts[0] if self.transcripts else self.default_transcript
        return (upcoming, upcoming) if isinstance(upcoming, str) else upcoming

    def _next_transcript(self) -> str:
        final = self._upcoming()[1]
        if self.transcripts:
            self.transcripts.pop(0)
        return final

    async def _session(self, ws: ServerConnection):
        query = {k: v[0] for k, v in parse_qs(urlparse(ws.request.path).query).items()}
        self.connections.append(query)
        received: list[str | int] = []
        self.messages.append(received)
        sample_rate = int(query.get("sample_rate", 16000))
        request_id = str(uuid.uuid4())
        audio_secs = 0.0
        speech_start: float | None = None
        silence = 0.0
        next_interim_at = FIRST_INTERIM_SECS  # seconds into the utterance

        async def send_results(text: str, is_final: bool, from_finalize: bool = False):
            message = {
                "type": "Results",
                "channel_index": [0, 1],
                "duration": round(audio_secs - (speech_start or 0), 3),
                "start": round(speech_start or 0, 3),
                "is_final": is_final,
                "speech_final": is_final,
                "from_finalize": from_finalize,
                "channel": {"alternatives": [{"transcript": text, "confidence": 0.98, "words": []}]},
                "metadata": {
                    "request_id": request_id,
                    "model_uuid": str(uuid.uuid4()),
                    "model_info": {"name": query.get("model", "nova-3"), "version": "fake", "arch": "fake"},
                },
            }
            await ws.send(json.dumps(message))

        async def finish_utterance(from_finalize: bool):
            nonlocal speech_start, next_interim_at
            if speech_start is not None:
                final = self._next_transcript()
                await send_results(final, True, from_finalize)
                self.finals.append((time.monotonic(), final))
            elif from_finalize:
                await send_results("", True, True)
            speech_start, next_interim_at = None, FIRST_INTERIM_SECS

        try:
            async for message in ws:
                if isinstance(message, bytes):
                    received.append(len(message))
                    samples = np.frombuffer(message, dtype="<i2")
                    step = int(sample_rate * LEVEL_SECS)  # any message size: energy per 20 ms, as heard
                    for pcm in (samples[i : i + step] for i in range(0, len(samples), step)):
                        chunk_secs = len(pcm) / sample_rate
                        audio_secs += chunk_secs
                        level = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
                        if level > SPEECH_RMS:
                            silence = 0.0
                            if speech_start is None:
                                speech_start = audio_secs - chunk_secs
                            if audio_secs - speech_start > next_interim_at:
                                next_interim_at += INTERIM_EVERY_SECS
                                await send_results(self._upcoming()[0], False)
                        elif speech_start is not None:
                            silence += chunk_secs
                            if silence >= ENDPOINTING_SECS:
                                await finish_utterance(from_finalize=False)
                    continue
                control = json.loads(message)
                received.append(control.get("type", "?"))
                if control.get("type") == "Finalize":
                    await asyncio.sleep(self.finalize_delay)
                    await finish_utterance(from_finalize=True)
                elif control.get("type") == "CloseStream":
                    await ws.send(json.dumps({"type": "Metadata", "request_id": request_id,
                                              "duration": audio_secs, "channels": 1}))
                    await ws.close()
        except websockets.ConnectionClosed:
            pass
