"""The shared smart-turn analyzer decides exactly as Pipecat's own, window by window, also when
many calls' turn ends are judged at the same moment."""

import asyncio
import os

import numpy as np
import pytest
import soxr
from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

from pipelines.smart_turn import SharedSmartTurnAnalyzer, shared_executor, shared_session
from tests.conftest import speech
from tests.fakes.audio import ulaw_to_pcm
from threadpoolctl import threadpool_limits

RATE = 8000
PACKET = 160  # 20 ms of 8 kHz audio


def analyzers(cls, count: int = 1):
    made = [cls(sample_rate=RATE) for _ in range(count)]
    for analyzer in made:
        analyzer.set_sample_rate(RATE)
    return made


def recorded(name: str) -> np.ndarray:
    return np.concatenate([ulaw_to_pcm(speech(name)), np.zeros(RATE // 2, np.int16)]).astype(np.int16)


@pytest.mark.parametrize("name", ["yes_this_is_ada", "long_story", "thanks_goodbye", "natural_paid", "natural_keep_plan"])
def test_same_predictions_as_pipecats_analyzer_on_every_window(name):
    [pipecat], [ours] = analyzers(LocalSmartTurnAnalyzerV3), analyzers(SharedSmartTurnAnalyzer)
    audio = recorded(name).astype(np.float32) / 32768.0
    ends = range(RATE // 2, len(audio) + 1, RATE // 4)  # every 250 ms from 0.5 s, as turns end mid-line too
    decisions = [(ours._predict_endpoint(audio[:end]), pipecat._predict_endpoint(audio[:end])) for end in ends]
    assert all(mine == theirs for mine, theirs in decisions)
    assert len({d[0]["probability"] for d in decisions}) > len(decisions) // 2  # the windows really differ


async def test_turn_ends_of_many_calls_at_once_decide_as_each_alone():
    lines = ["long_story", "yes_this_is_ada", "thanks_goodbye", "long_story", "yes_this_is_ada", "thanks_goodbye"]
    theirs, ours = analyzers(LocalSmartTurnAnalyzerV3, len(lines)), analyzers(SharedSmartTurnAnalyzer, len(lines))
    for name, pipecat, mine in zip(lines, theirs, ours):
        audio = recorded(name)
        for start in range(0, len(audio) - RATE // 4, PACKET):  # the last 250 ms are silence, before stop_secs
            is_speech = start < len(audio) - RATE // 2
            pipecat.append_audio(audio[start : start + PACKET].tobytes(), is_speech)
        mine._audio_buffer, mine._speech_start_time = list(pipecat._audio_buffer), pipecat._speech_start_time
        mine._speech_triggered = pipecat._speech_triggered
    alone = [await pipecat.analyze_end_of_turn() for pipecat in theirs]
    together = await asyncio.gather(*(mine.analyze_end_of_turn() for mine in ours))
    for (state, metrics), (their_state, their_metrics) in zip(together, alone):
        assert state == their_state and metrics.probability == their_metrics.probability


def test_calls_share_one_model_and_a_bounded_executor():
    first, second = analyzers(SharedSmartTurnAnalyzer, 2)
    assert first._session is second._session is shared_session()
    assert first._model_executor is second._model_executor is shared_executor()
    assert shared_executor()._max_workers <= (__import__("os").cpu_count() or 1)


@pytest.mark.parametrize("name", ["long_story", "natural_paid", "natural_keep_plan"])
def test_features_with_blas_on_one_thread_are_the_same_to_the_bit(name):
    """The server runs numpy's BLAS on one thread (pipelines/smart_turn.py); Pipecat's analyzer
    elsewhere would run it on every core: the model must see the same features either way."""
    shared_session()  # sets the server's limit
    audio = recorded(name).astype(np.float32) / 32768.0
    for end in range(RATE, len(audio) + 1, RATE // 2):
        model_input = soxr.resample(audio[:end], RATE, 16000, quality="HQ")[-128000:]
        model_input = np.pad(model_input, (128000 - len(model_input), 0))
        ours = compute_whisper_log_mel_features(model_input)
        with threadpool_limits(os.cpu_count() or 1, user_api="blas"):
            every_core = compute_whisper_log_mel_features(model_input)
        assert np.array_equal(ours, every_core)
