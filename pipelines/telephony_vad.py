"""Silero voice activity detection, made cheap enough to run dozens of calls in one process.

Pipecat's `SileroVADAnalyzer` gives every call its own ONNX session (about 30 ms to load, on
the event loop, as the call starts) and hands every 20 ms packet to a thread. Here:
- one ONNX session serves every call in the process; each call keeps its own model state;
- the windows calls have ready within 10 ms of each other are scored in one inference, on the
  event loop (ONNX's fixed cost per run dominates: a 32 ms window alone takes ~96 µs, in fours
  ~49 µs each), with no thread hand-off around it. Waiting 10 ms for company, rather than
  scoring what the loop's current turn has, took the event loop's CPU at 10 calls from 46 to 40
  ms per call-second (3 interleaved runs each); a decision comes at most 10 ms later. Scoring in
  a thread as well took 4 ms more off the loop but nothing off the total (without the wait, it
  added 5 ms to the total): left out. Once every live call's window is in, nobody is left to
  wait for and the batch runs at once: a lone call never waits, and a call catching up on
  packets queued while its turn end was judged does not wait 10 ms a packet (that wait held the
  final transcript, queued behind them, ~11 ms after smart-turn's verdict).
The model, its inputs and the decisions are Pipecat's own: a batch row computes exactly what a
single run computes (tests/test_telephony_vad.py compares them window by window). Skipping the
model on quiet windows would save more, but changes its recurrent state and so, now and then, a
decision: measured, and left out.
"""

import asyncio
import weakref
from importlib import resources

import numpy as np
import onnxruntime
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState

BATCH_SECS = 0.01  # windows gathered this long are scored together

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


class SileroBatcher:
    """Scores, in one inference, the windows every call in the process has ready within
    BATCH_SECS (or as soon as every live call has one ready), and advances each call's model
    state as a run of its own would."""

    def __init__(self):
        self._pending: list[tuple[SharedSileroModel, np.ndarray, int, asyncio.Future]] = []
        self._live: weakref.WeakSet[SharedSileroModel] = weakref.WeakSet()  # calls' models, until they end
        self._timer: asyncio.TimerHandle | None = None

    def join(self, model: SharedSileroModel) -> None:
        self._live.add(model)

    def leave(self, model: SharedSileroModel) -> None:
        self._live.discard(model)

    def confidence(self, model: SharedSileroModel, window: np.ndarray, sample_rate: int) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((model, window, sample_rate, future))
        if len(self._pending) >= len(self._live):  # every live call is in: nobody to wait for
            self._run()
        elif self._timer is None:
            self._timer = loop.call_later(BATCH_SECS, self._run)
        return future

    def _run(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        for sample_rate in {rate for _, _, rate, _ in pending}:
            batch = [p for p in pending if p[2] == sample_rate and not p[3].cancelled()]
            if batch:
                self._score(batch, sample_rate)

    def _score(self, batch: list, sample_rate: int) -> None:
        context_size = 64 if sample_rate == 16000 else 32
        models = [model for model, _, _, _ in batch]
        contexts = [m._context if m._context.shape[1] else np.zeros((1, context_size), np.float32) for m in models]
        inputs = np.concatenate([np.concatenate(contexts), np.stack([w for _, w, _, _ in batch])], axis=1)
        states = np.concatenate([m._state for m in models], axis=1)
        try:
            out, states = shared_session().run(
                None, {"input": inputs, "state": states, "sr": np.array(sample_rate, dtype="int64")}
            )
        except Exception as e:
            for _, _, _, future in batch:
                future.set_exception(e)
            return
        for i, (model, _, _, future) in enumerate(batch):
            model._state = states[:, i : i + 1].copy()
            model._context = inputs[i : i + 1, -context_size:].copy()
            future.set_result(float(out[i, 0]))


_batcher = SileroBatcher()


class TelephonyVADAnalyzer(SileroVADAnalyzer):
    """Silero VAD with one model per process and windows scored in batches across calls."""

    def __init__(self, *, sample_rate: int | None = None, params: VADParams | None = None):
        # Skip SileroVADAnalyzer.__init__, which loads a model of its own; set what it sets.
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        self._model = SharedSileroModel()
        _batcher.join(self._model)
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self._confidence = 0.0

    async def analyze_audio(self, buffer: bytes) -> VADState:
        # Feed VADAnalyzer._run_analyzer (Pipecat's state machine) one window at a time, each
        # scored first, with whatever windows other calls have ready.
        state = self._vad_state
        window_bytes = self._vad_frames_num_bytes
        while buffer:
            missing = window_bytes - len(self._vad_buffer)
            part, buffer = buffer[:missing], buffer[missing:]
            if len(self._vad_buffer) + len(part) == window_bytes:
                window = np.frombuffer(self._vad_buffer + part, np.int16).astype(np.float32) / 32768.0
                self._confidence = await _batcher.confidence(self._model, window, self.sample_rate)
            state = self._run_analyzer(part)
        return state

    async def cleanup(self):
        _batcher.leave(self._model)
        await super().cleanup()

    def voice_confidence(self, buffer) -> float:
        self._maybe_reset_model(self._confidence)  # as SileroVADAnalyzer does after each window
        return self._confidence
