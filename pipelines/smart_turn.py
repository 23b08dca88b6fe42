"""Pipecat's smart-turn v3, shared by every call in the process.

`LocalSmartTurnAnalyzerV3` loads its own ONNX session for each call (the model's weights and
ONNX's arenas: most of a call's memory in the default configuration, and ~0.3 s of CPU as the
call starts) and gives each call a thread of its own for inference. Here one session, loaded as
the server starts (`load_shared_session`), serves every call, and every call's inference runs
on one executor thread: inference stays off the event loop, and a burst of turn ends cannot
start a thread per call.

The inference is on the path of every reply (the turn cannot end before it), so one inference
uses every core (ONNX intra-op threads = cores, 19 ms instead of 26 on this 2-core machine) and
inferences take turns, rather than several running side by side on one core each. ONNX's
threads do not spin waiting for work: spinning cost 68 ms of CPU per inference instead of 31.
Nor do numpy's: the features' one matrix product woke OpenBLAS's thread per core, which then
spun ~100 ms waiting for more (103 ms of CPU per inference for 7 ms of work; 15 ms per
call-second at 10 calls, a third of the server's CPU). BLAS runs on one thread in a process
that serves calls (`threadpoolctl`). The analyzer's decisions are Pipecat's own: the same model,
the same features (to the bit, with BLAS on one thread or every core), the same code
(`tests/test_smart_turn.py` compares them with Pipecat's analyzer on recorded speech).
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import numpy as np
import onnxruntime as ort
from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from threadpoolctl import threadpool_limits

MODEL = "smart-turn-v3.2-cpu.onnx"  # the model Pipecat bundles and loads by default

_lock = threading.Lock()
_session: ort.InferenceSession | None = None
_executor: ThreadPoolExecutor | None = None


def shared_session() -> ort.InferenceSession:
    """The process's one smart-turn ONNX session, loaded on first use."""
    global _session
    with _lock:
        if _session is None:
            options = ort.SessionOptions()
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.inter_op_num_threads = 1
            options.intra_op_num_threads = os.cpu_count() or 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            threadpool_limits(1, user_api="blas")  # process-wide: numpy's matrix products on one thread
            model = resources.files("pipecat.audio.turn.smart_turn.data").joinpath(MODEL)
            _session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        return _session


def load_shared_session() -> None:
    """Load the session and run inference on silence on the executor's thread, as the server
    starts: ONNX and the C library allocate the working memory (~60 MB, in the thread that will
    use it) now, not in the first callee's first turn (whose reply it slowed ~180 ms). Once
    per process."""
    if _session is None:
        shared_executor().submit(_infer_silence).result()


def _infer_silence() -> None:
    # Twice: the C library serves the first pass's large buffers from fresh mappings and gives
    # them back; from the second on they come from its heap and stay (17 MB more, once).
    for _ in range(2):
        silence = compute_whisper_log_mel_features(np.zeros(8 * 16000, np.float32))
        shared_session().run(None, {"input_features": silence[np.newaxis]})


def shared_executor() -> ThreadPoolExecutor:
    """Where every call's smart-turn inference runs, one at a time (each uses every core)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn")
        return _executor


class SharedSmartTurnAnalyzer(LocalSmartTurnAnalyzerV3):
    """Pipecat's local smart-turn v3 analyzer on the process's shared session and executor."""

    def __init__(self, **kwargs):
        BaseSmartTurn.__init__(self, **kwargs)  # LocalSmartTurnAnalyzerV3's own would load a session
        self._log_data = False
        self._session = shared_session()

    @property
    def _model_executor(self) -> ThreadPoolExecutor:
        return shared_executor()
