"""Each side's audio stops where nothing further needs it; every other frame goes on, in order."""

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    InputAudioRawFrame,
    LLMTextFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.tests.utils import run_test

from pipelines.audio_stops import StopBotAudio, StopCalleeAudio

pytestmark = pytest.mark.timeout(30)

CALLEE = InputAudioRawFrame(audio=b"\0" * 320, sample_rate=8000, num_channels=1)


def bot_audio() -> TTSAudioRawFrame:
    return TTSAudioRawFrame(audio=b"\0" * 320, sample_rate=8000, num_channels=1, context_id="reply")


async def test_the_callee_audio_stops_and_the_words_go_on():
    down, _ = await run_test(
        StopCalleeAudio(),
        frames_to_send=[CALLEE, TranscriptionFrame("hello", "callee", "now"), CALLEE, LLMTextFrame("hi")],
        expected_down_frames=[TranscriptionFrame, LLMTextFrame],
    )
    assert [frame.text for frame in down] == ["hello", "hi"]


async def test_the_bot_audio_stops_after_it_is_sent_and_its_words_go_on():
    down, _ = await run_test(
        StopBotAudio(),
        frames_to_send=[
            BotStartedSpeakingFrame(),
            bot_audio(),
            TTSTextFrame("Hello", text_type="word", context_id="reply"),
            bot_audio(),
            OutputAudioRawFrame(audio=b"\0" * 320, sample_rate=8000, num_channels=1),
        ],
        expected_down_frames=[BotStartedSpeakingFrame, TTSTextFrame],
    )
    assert down[1].text == "Hello"


async def test_the_callee_audio_passes_the_bot_stop_and_the_bot_audio_the_callee_stop():
    await run_test(StopBotAudio(), frames_to_send=[CALLEE], expected_down_frames=[InputAudioRawFrame])
    await run_test(StopCalleeAudio(), frames_to_send=[bot_audio()], expected_down_frames=[TTSAudioRawFrame])
