"""The callee's audio reaches Deepgram (the fake, over Pipecat's service and the real SDK) in 100 ms
messages, and what is gathered when the callee stops goes out before the `Finalize`."""

from pipecat.frames.frames import InputAudioRawFrame, TranscriptionFrame, VADUserStoppedSpeakingFrame
from pipecat.tests.utils import SleepFrame, run_test

from pipelines.deepgram_stt import ChunkedDeepgramSTTService
from tests.conftest import speech
from tests.fakes.audio import ulaw_to_pcm

PACKET = 320  # 20 ms of 8 kHz 16-bit audio: what the transport hands the service each time


def packets(count: int) -> list[InputAudioRawFrame]:
    pcm = ulaw_to_pcm(speech("yes_this_is_ada")).astype("<i2").tobytes()
    return [InputAudioRawFrame(pcm[i * PACKET : (i + 1) * PACKET], 8000, 1) for i in range(count)]


async def test_audio_goes_in_100_ms_messages_and_the_rest_before_finalize(vendors):
    vendors.deepgram.transcripts = ["yes this is ada"]
    stt = ChunkedDeepgramSTTService(api_key="dg-key", base_url=vendors.deepgram.base_url, sample_rate=8000)
    down, _ = await run_test(
        stt,
        # 37 packets: seven 100 ms messages and 40 ms left over when the VAD says the callee stopped
        frames_to_send=[*packets(37), VADUserStoppedSpeakingFrame(stop_secs=0.2), SleepFrame(0.5)],
        start_timeout=5,
    )
    [received] = vendors.deepgram.messages
    until_finalize = received[: received.index("Finalize")]
    assert until_finalize == [1600] * 7 + [640]
    assert [f.text for f in down if isinstance(f, TranscriptionFrame)] == ["yes this is ada"]
    assert sum(m for m in received if isinstance(m, int)) == 37 * PACKET  # nothing lost
