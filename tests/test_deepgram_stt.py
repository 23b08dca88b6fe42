"""The callee's audio reaches Deepgram (the fake, over Pipecat's service and the real SDK): quiet
packets gathered into 100 ms messages, sound at once, and what is gathered when the callee stops
before the `Finalize`."""

import numpy as np
from pipecat.frames.frames import InputAudioRawFrame, TranscriptionFrame, VADUserStoppedSpeakingFrame
from pipecat.tests.utils import SleepFrame, run_test

from pipelines.deepgram_stt import ChunkedDeepgramSTTService
from tests.conftest import speech
from tests.fakes.audio import ulaw_to_pcm

PACKET = 320  # 20 ms of 8 kHz 16-bit audio: what the transport hands the service each time


def packets(pcm: np.ndarray) -> list[InputAudioRawFrame]:
    audio = pcm.astype("<i2").tobytes()
    return [InputAudioRawFrame(audio[i : i + PACKET], 8000, 1) for i in range(0, len(audio), PACKET)]


def loud_packets(count: int) -> list[InputAudioRawFrame]:
    loud = [p for p in packets(ulaw_to_pcm(speech("yes_this_is_ada"))) if np.abs(np.frombuffer(p.audio, "<i2")).mean() > 1000]
    return loud[:count]


async def test_quiet_audio_goes_in_100_ms_messages_sound_at_once_and_the_rest_before_finalize(vendors):
    vendors.deepgram.transcripts = ["yes this is ada"]
    stt = ChunkedDeepgramSTTService(api_key="dg-key", base_url=vendors.deepgram.base_url, sample_rate=8000)
    silence = packets(np.zeros(160 * 12))  # 12 quiet packets: two 100 ms messages, two gathered
    down, _ = await run_test(
        stt,
        frames_to_send=[*silence, *loud_packets(3), *silence[:3], VADUserStoppedSpeakingFrame(stop_secs=0.2), SleepFrame(0.5)],
        start_timeout=5,
    )
    [received] = vendors.deepgram.messages
    until_finalize = received[: received.index("Finalize")]
    # 2 × 100 ms of quiet; the first sound with the two quiet packets before it; sound; sound;
    # the three quiet packets after it, sent when the VAD said the callee stopped.
    assert until_finalize == [1600, 1600, 3 * PACKET, PACKET, PACKET, 3 * PACKET], received
    assert [f.text for f in down if isinstance(f, TranscriptionFrame)] == ["yes this is ada"]
    assert sum(m for m in received if isinstance(m, int)) == 18 * PACKET  # nothing lost
