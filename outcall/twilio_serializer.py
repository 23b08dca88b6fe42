"""Pipecat's Twilio serializer, taught not to hang up a call that has moved on without the bot."""

import json

from pipecat.frames.frames import CancelFrame, EndFrame, Frame
from pipecat.serializers.twilio import TwilioFrameSerializer


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
