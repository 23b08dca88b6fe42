"""The shared, inline Silero VAD decides exactly as Pipecat's own, window by window."""

import numpy as np
import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer

from pipelines.telephony_vad import TelephonyVADAnalyzer, shared_session
from tests.conftest import speech
from tests.fakes.audio import ulaw_to_pcm


def states(analyzer, pcm: bytes) -> list[str]:
    analyzer.set_sample_rate(8000)
    return [analyzer._run_analyzer(pcm[i : i + 320]).name for i in range(0, len(pcm), 320)]


@pytest.mark.parametrize("line", ["yes_this_is_ada", "long_story"])
@pytest.mark.parametrize("offset", [0, 96, 200])
def test_same_decisions_as_pipecat_silero(line, offset):
    pcm = np.concatenate([np.zeros(offset, "<i2"), ulaw_to_pcm(speech(line)), np.zeros(8000, "<i2")]).tobytes()
    ours = states(TelephonyVADAnalyzer(sample_rate=8000), pcm)
    assert "SPEAKING" in ours and ours[-1] == "QUIET"
    assert ours == states(SileroVADAnalyzer(sample_rate=8000), pcm)


async def test_calls_share_one_model_and_keep_their_own_state():
    first, second = TelephonyVADAnalyzer(sample_rate=8000), TelephonyVADAnalyzer(sample_rate=8000)
    assert first._model.session is second._model.session is shared_session()
    first.set_sample_rate(8000)
    second.set_sample_rate(8000)
    talk = ulaw_to_pcm(speech("yes_this_is_ada")).tobytes()
    for i in range(0, len(talk) // 2, 320):
        await first.analyze_audio(talk[i : i + 320])
    assert not np.array_equal(first._model._state, second._model._state)
