"""The bot's side of Twilio's Media Streams: Pipecat's serializer, taught not to hang up a call
that has moved on without the bot; the stream's socket, closed quietly when Twilio closed it
first; Pipecat's transport, passing each packet on without a queue of its own; and the raw
`media` messages that carry a pre-synthesised greeting."""

import base64
import json
from collections.abc import Iterator

from fastapi import WebSocket, WebSocketDisconnect
from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame, Frame, InputAudioRawFrame
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketInputTransport,
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from starlette.websockets import WebSocketState


class CallStreamSerializer(TwilioFrameSerializer):
    """Hangs up through Twilio's REST API when the bot ends, like its parent, unless Twilio
    has already stopped the stream or the bot handed the call off.

    Twilio stops the stream when the callee hangs up and when the call gets new TwiML (a
    transfer, a voicemail message). A REST hang-up after that would cut the transfer short.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.call_released = False

    def release_call(self) -> None:
        """The call is being handed on: ending the bot must not end the call."""
        self.call_released = True

    def keep_call(self) -> None:
        """The hand-off failed: ending the bot hangs the call up again."""
        self.call_released = False

    async def deserialize(self, data: str | bytes) -> Frame | None:
        frame = await super().deserialize(data)
        if frame is None and b'"stop"' in (data if isinstance(data, bytes) else data.encode()):
            try:
                self.call_released = self.call_released or json.loads(data).get("event") == "stop"
            except (ValueError, AttributeError):
                pass
        return frame

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if self.call_released and isinstance(frame, (EndFrame, CancelFrame)):
            return None
        return await super().serialize(frame)


class TwilioStreamSocket:
    """The stream's WebSocket as Pipecat's transport uses it, except that closing a socket Twilio
    has already closed is not an error.

    When the bot ends a call it hangs up through the REST API, and Twilio then closes the stream
    from its side while the transport closes it from ours. Whichever is second finds the socket
    closed; Pipecat logs that as an ERROR, though the call ended exactly as intended.
    """

    def __init__(self, websocket: WebSocket):
        self._websocket = websocket

    def __getattr__(self, name: str):
        return getattr(self._websocket, name)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        if WebSocketState.DISCONNECTED in (self._websocket.client_state, self._websocket.application_state):
            return
        try:
            await self._websocket.close(code, reason)
        except (RuntimeError, OSError, WebSocketDisconnect) as e:  # Twilio closed it first
            logger.debug(f"Stream already closed by Twilio: {type(e).__name__}: {e}")


class DirectAudioInputTransport(FastAPIWebsocketInputTransport):
    """Pipecat's WebSocket input, passing each audio packet on from the task that received it.

    Pipecat's input transport puts every packet in a queue of its own, for a task that runs the
    transport's audio filter and then passes the packet on, each wait on that queue bounded by
    `asyncio.wait_for` (a task and a timer per packet on Python 3.11). Without a filter the hop
    does nothing but cost: a packet goes on at once, in the order it arrived, after any keypad
    or `stop` message before it.
    """

    async def push_audio_frame(self, frame: InputAudioRawFrame):
        if self._params.audio_in_filter:
            await super().push_audio_frame(frame)
        elif self._params.audio_in_enabled and self._params.audio_in_passthrough and not self._paused:
            await self.push_frame(frame)


class TwilioStreamTransport(FastAPIWebsocketTransport):
    """Pipecat's FastAPI WebSocket transport with `DirectAudioInputTransport` as its input."""

    def __init__(self, websocket: WebSocket, params: FastAPIWebsocketParams, **kwargs):
        super().__init__(websocket, params, **kwargs)
        self._input = DirectAudioInputTransport(self, self._client, self._params, name=self._input_name)


# The bot's audio goes to Twilio 80 ms to a media message (Pipecat's default is 40). Each message
# costs the event loop a frame copy, a serialisation, a send and two timed waits, whatever its
# length; the transport paces them in real time and sends one ahead, so Twilio also holds 80 ms
# in hand against a late one. Measured at 10 calls: 3.0–7.4 ms less event-loop CPU per
# call-second in three paired runs.
MEDIA_CHUNK_MS = 80
MEDIA_CHUNK_BYTES = 8 * MEDIA_CHUNK_MS  # 8 kHz μ-law: a byte a sample


def media_messages(stream_sid: str, ulaw: bytes) -> Iterator[str]:
    """Audio as Twilio's `media` messages, for sending before the pipeline (and its serializer) runs."""
    for i in range(0, len(ulaw), MEDIA_CHUNK_BYTES):
        payload = base64.b64encode(ulaw[i : i + MEDIA_CHUNK_BYTES]).decode()
        yield json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})
