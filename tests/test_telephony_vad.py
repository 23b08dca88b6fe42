"""The shared, batched Silero VAD decides exactly as Pipecat's own, window by window."""

import asyncio

import numpy as np
import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer

from pipelines.telephony_vad import SharedSileroModel, SileroBatcher, TelephonyVADAnalyzer, shared_session
from tests.conftest import speech
from tests.fakes.audio import ulaw_to_pcm

PACKET = 320  # 20 ms of 8 kHz 16-bit audio, as each Twilio media message brings


def line(name: str, offset: int) -> bytes:
    return np.concatenate([np.zeros(offset, "<i2"), ulaw_to_pcm(speech(name)), np.zeros(8000, "<i2")]).tobytes()


def pipecat_states(pcm: bytes) -> list[str]:
    analyzer = SileroVADAnalyzer(sample_rate=8000)
    analyzer.set_sample_rate(8000)
    return [analyzer._run_analyzer(pcm[i : i + PACKET]).name for i in range(0, len(pcm), PACKET)]


async def our_states(pcm: bytes) -> list[str]:
    analyzer = TelephonyVADAnalyzer(sample_rate=8000)
    analyzer.set_sample_rate(8000)
    states = []
    for i in range(0, len(pcm), PACKET):
        states.append((await analyzer.analyze_audio(pcm[i : i + PACKET])).name)
        await asyncio.sleep(0)  # calls interleave, as their packets do on one event loop
    return states


@pytest.mark.parametrize("name", ["yes_this_is_ada", "long_story"])
@pytest.mark.parametrize("offset", [0, 96, 200])
async def test_same_decisions_as_pipecat_silero(name, offset):
    pcm = line(name, offset)
    ours = await our_states(pcm)
    assert "SPEAKING" in ours and ours[-1] == "QUIET"
    assert ours == pipecat_states(pcm)


async def test_calls_scored_together_decide_as_if_alone():
    lines = [line("long_story", 0), line("yes_this_is_ada", 96), line("thanks_goodbye", 200), line("long_story", 160)]
    together = await asyncio.gather(*(our_states(pcm) for pcm in lines))
    assert together == [pipecat_states(pcm) for pcm in lines]


def test_calls_share_one_model():
    first, second = TelephonyVADAnalyzer(sample_rate=8000), TelephonyVADAnalyzer(sample_rate=8000)
    assert first._model.session is second._model.session is shared_session()
    assert first._model._state is not second._model._state


async def test_a_batch_runs_as_soon_as_every_live_call_has_a_window():
    batcher, window = SileroBatcher(), np.zeros(256, np.float32)
    first, second = SharedSileroModel(), SharedSileroModel()
    batcher.join(first)
    assert batcher.confidence(first, window, 8000).done()  # a lone call waits for nobody
    batcher.join(second)
    waiting = batcher.confidence(first, window, 8000)
    assert not waiting.done()
    assert batcher.confidence(second, window, 8000).done() and waiting.done()  # both in: scored together
    assert await asyncio.wait_for(batcher.confidence(second, window, 8000), 1) >= 0  # no company: scored after the wait
    batcher.leave(second)  # its call ended
    assert batcher.confidence(first, window, 8000).done()
