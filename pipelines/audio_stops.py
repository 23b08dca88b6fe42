"""Where each side's audio stops travelling down the pipeline.

Every 20 ms packet is a frame, and each processor a frame reaches costs a queue hand-off and a
task switch (13 µs for the callee's frames, 18 for the bot's, measured on the 2-core CI machine;
far more under load). Audio goes no further than the last processor that needs it, and the
stops run in Pipecat's direct mode: a frame is dropped in the task that pushed it, with no
hand-off of its own.
"""

from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class AudioStop(FrameProcessor):
    """Drops one side's audio frames (`dropped`) in the task that pushed them; passes the rest on."""

    dropped: type[Frame]

    def __init__(self, **kwargs):
        super().__init__(enable_direct_mode=True, **kwargs)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if not isinstance(frame, self.dropped):
            await self.push_frame(frame, direction)


class StopCalleeAudio(AudioStop):
    """Drops the callee's audio once speech-to-text and VAD (in the user aggregator) have heard it.

    Nothing after them uses it, and each 20 ms packet would otherwise pass through the LLM,
    TTS, output transport and assistant aggregator: 50 frames a second.
    """

    dropped = InputAudioRawFrame


class StopBotAudio(AudioStop):
    """Drops the bot's audio once the output transport has sent it to Twilio.

    The transport passes each sent frame on downstream "in case anyone else needs it"; the
    assistant aggregator after it does not (it records the bot's words, not its sound).
    """

    dropped = OutputAudioRawFrame
