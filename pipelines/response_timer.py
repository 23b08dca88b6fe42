"""How long the callee waits for each reply."""

import time

from pipecat.frames.frames import BotStartedSpeakingFrame, Frame, VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class ResponseTimer(FrameProcessor):
    """Times each reply, from when the callee stopped speaking (the VAD's verdict minus the
    silence it waited for) to the bot's first audio, and reports it through the
    `on_response_latency(processor, seconds)` event.

    Pipecat's UserBotLatencyObserver measures the same, but an observer is handed every frame
    of every processor; this sits after the user aggregator and sees the few frames it needs
    (the bot's speaking frames travel upstream from the output transport to it), in Pipecat's
    direct mode: it only watches, so it needs no queue and task of its own.
    """

    def __init__(self, **kwargs):
        super().__init__(enable_direct_mode=True, **kwargs)
        self._register_event_handler("on_response_latency")
        self._callee_stopped_at: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._callee_stopped_at = None
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._callee_stopped_at = frame.timestamp - frame.stop_secs
        elif isinstance(frame, BotStartedSpeakingFrame) and self._callee_stopped_at is not None:
            seconds = time.time() - self._callee_stopped_at
            self._callee_stopped_at = None
            await self._call_event_handler("on_response_latency", seconds)
        await self.push_frame(frame, direction)
