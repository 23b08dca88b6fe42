"""Silero voice activity detection, made cheap enough to run dozens of calls in one process.

Pipecat's `SileroVADAnalyzer` gives every call its own ONNX session (about 30 ms to load, on
the event loop, as the call starts) and hands every 20 ms packet to a thread. Here:
- one ONNX session serves every call in the process; each call keeps its own model state;
- the model runs inline: 0.1 ms of inference is cheaper than the thread hand-off around it.
The model, its inputs and the decisions are Pipecat's own, unchanged. (Skipping the model on
quiet windows saves another ~4 ms per call-second, but changes its recurrent state and so,
now and then, a decision: measured, and left out.)
"""

from importlib import resources

import onnxruntime
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState

_shared_session: onnxruntime.InferenceSession | None = None


def shared_session() -> onnxruntime.InferenceSession:
    """The process's one Silero ONNX session, loaded on first use."""
    global _shared_session
    if _shared_session is None:
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        model = resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx")
        _shared_session = onnxruntime.InferenceSession(
            str(model), providers=["CPUExecutionProvider"], sess_options=options
        )
    return _shared_session


class SharedSileroModel(SileroOnnxModel):
    """Silero's model wrapper on the shared session: the weights are loaded once per process,
    the recurrent state (`_state`, `_context`) is this call's own."""

    def __init__(self):
        self.session = shared_session()
        self.sample_rates = [8000, 16000]
        self.reset_states()


class TelephonyVADAnalyzer(SileroVADAnalyzer):
    """Silero VAD with one model per process and inline inference."""

    def __init__(self, *, sample_rate: int | None = None, params: VADParams | None = None):
        # Skip SileroVADAnalyzer.__init__, which loads a model of its own; set what it sets.
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        self._model = SharedSileroModel()
        self._windows_since_reset = 0
        self._low_confidence_windows = 0

    async def analyze_audio(self, buffer: bytes) -> VADState:
        return self._run_analyzer(buffer)
