"""The stream's input passes each packet on from the task that received it, so frames leave it in
the order Twilio sent them: a key pressed between two packets is not overtaken by the second,
nor does it overtake the first."""

import asyncio
import base64
import json

import pytest
from pipecat.frames.frames import ClientConnectedFrame, InputAudioRawFrame, InputDTMFFrame
from pipecat.pipeline.worker import PipelineParams
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams
from starlette.websockets import WebSocketState

from pipelines.twilio_stream import TwilioStreamTransport

pytestmark = pytest.mark.timeout(30)

STREAM_SID = "MZ" + "0" * 32


class ReplayedStream:
    """A Media Streams socket that delivers the given messages at once, then waits for the close."""

    def __init__(self, messages: list[dict]):
        self._messages = [{"type": "websocket.receive", "text": json.dumps(m)} for m in messages]
        self._closed = asyncio.Event()
        self.client_state = self.application_state = WebSocketState.CONNECTED

    async def receive(self) -> dict:
        if self._messages:
            return self._messages.pop(0)
        await self._closed.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.client_state = self.application_state = WebSocketState.DISCONNECTED
        self._closed.set()


def media(byte: int) -> dict:
    payload = base64.b64encode(bytes([byte]) * 160).decode()
    return {"event": "media", "streamSid": STREAM_SID, "media": {"payload": payload}}


def key(digit: str) -> dict:
    return {"event": "dtmf", "streamSid": STREAM_SID, "dtmf": {"digit": digit}}


async def test_audio_and_keys_leave_the_input_in_the_order_they_arrived():
    transport = TwilioStreamTransport(
        websocket=ReplayedStream([media(0x00), key("1"), media(0x7F), media(0x00), key("2")]),
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            serializer=TwilioFrameSerializer(STREAM_SID, params=TwilioFrameSerializer.InputParams(auto_hang_up=False)),
        ),
    )
    down, _ = await run_test(
        transport.input(),
        frames_to_send=[SleepFrame(0.3)],
        pipeline_params=PipelineParams(audio_in_sample_rate=8000),  # Twilio's rate, as the bot runs
        expected_down_frames=[
            ClientConnectedFrame,
            InputAudioRawFrame,
            InputDTMFFrame,
            InputAudioRawFrame,
            InputAudioRawFrame,
            InputDTMFFrame,
        ],
    )
    # μ-law 0x00 and 0x7F decode to opposite extremes: the packets kept their own order too.
    assert [frame.audio[:2] for frame in down if isinstance(frame, InputAudioRawFrame)] == [
        b"\x84\x82", b"\x00\x00", b"\x84\x82"
    ]
