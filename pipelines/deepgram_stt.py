"""Deepgram speech-to-text, fed 100 ms of the callee's audio at a time instead of every 20 ms packet.

Pipecat's `DeepgramSTTService` sends each packet the transport receives as a WebSocket message of
its own: 50 a second per call, each a frame to mask, deflate and write with a system call. At ten
calls that was 18 % of the event loop's CPU (py-spy), more than any pipeline processor. Deepgram
takes chunks of 20 to 250 ms; here the packets are gathered into 100 ms chunks, a fifth of the
messages.

Gathering would hold back the end of an utterance by up to 80 ms, so whatever is gathered is
sent the moment the VAD says the callee stopped, before Pipecat's `Finalize` asks Deepgram for
the final transcript: what the turn decision waits for arrives as soon as before. The
transcripts are Deepgram's own; only the message boundaries move.
"""

from pipecat.frames.frames import Frame, VADUserStoppedSpeakingFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.deepgram.stt import DeepgramSTTService

CHUNK_SECS = 0.1


class ChunkedDeepgramSTTService(DeepgramSTTService):
    """Pipecat's Deepgram service, sending the callee's 16-bit audio in CHUNK_SECS chunks."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._gathered = bytearray()

    async def run_stt(self, audio: bytes):
        self._gathered += audio
        if len(self._gathered) >= int(self.sample_rate * CHUNK_SECS) * 2:
            await self.send_gathered()
        yield None

    async def send_gathered(self) -> None:
        """Send what has been gathered, as one message (Pipecat's own send and its error handling)."""
        if self._gathered:
            chunk, self._gathered = bytes(self._gathered), bytearray()
            async for _ in super().run_stt(chunk):
                pass

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            await self.send_gathered()  # the utterance's end, before Finalize
        await super().process_frame(frame, direction)
