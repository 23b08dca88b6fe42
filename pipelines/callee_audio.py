"""Where the callee's audio stops travelling down the pipeline."""

from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class StopCalleeAudio(FrameProcessor):
    """Drops the callee's audio once speech-to-text and VAD (in the user aggregator) have heard it.

    Nothing after them uses it, and each 20 ms packet would otherwise pass through the LLM,
    TTS, output transport and assistant aggregator: 50 frames a second, each a queue hand-off.
    """

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if not isinstance(frame, InputAudioRawFrame):
            await self.push_frame(frame, direction)
