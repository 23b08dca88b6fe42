"""The reply starts while the turn's end is still being decided.

Pipecat ends a turn once its stop strategy has decided, and only then asks the LLM: with
smart-turn once the model has judged the turn complete (20–90 ms of inference after VAD stop,
by CPU) and Deepgram's final transcript is in (on a real line 50–150 ms after VAD stop); with
`TURN_STOP=speech_timeout` once the callee has been quiet for the whole timeout. Here the LLM is
asked at VAD stop, on the best transcript in hand (the turn's final transcripts and Deepgram's
latest interim), as a Pipecat speculation: the LLM service's `SpeculationGate` holds everything
the reply produces, and nothing reaches the callee or the context, until the turn ends. Then:

- the turn ends and the final transcript matches the one speculated on (Pipecat's
  `NormalizedMatch`: case and punctuation aside): the held reply goes out at once, and the LLM
  is not asked again;
- the final transcript says something else: the speculation is withdrawn and the LLM asked
  again, on the final transcript, as without speculation; while the end is still being decided
  (smart-turn judging, the timeout running), a newer transcript replaces the speculation at once;
- smart-turn says INCOMPLETE, or the callee speaks again: the speculation is withdrawn (the LLM
  stops generating) and the turn goes on;
- the speculative reply calls a tool: Pipecat withdraws it, and the tool runs once, when the
  turn has ended.

The cost is an LLM request for each withdrawn speculation: one per VAD stop that does not end
the turn, or whose transcript Deepgram revises. SPECULATIVE_REPLIES=false turns it off.
"""

from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop import (
    NormalizedMatch,
    SpeechTimeoutUserTurnStopStrategy,
    TurnAnalyzerUserTurnStopStrategy,
)


class SpeculativeReplies:
    """Speculation for a Pipecat user-turn stop strategy (mixed in before it): the LLM is asked
    at VAD stop, and its reply is released or withdrawn when the strategy decides."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._match_policy = NormalizedMatch()
        self._finals: list[str] = []  # the turn's final transcripts so far
        self._interim = ""  # Deepgram's latest interim since the last final
        self._deciding = False  # the strategy is deciding whether this VAD stop ends the turn
        self._speculation: UserTurnSpeculation | None = None

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, TranscriptionFrame):
            self._finals.append(frame.text)
            self._interim = ""
        elif isinstance(frame, InterimTranscriptionFrame):
            self._interim = frame.text
        elif isinstance(frame, EagerEndOfTurnCancelFrame):
            self._speculation = None  # the LLM withdrew it (it wanted a tool): answer when the turn ends
        result = await super().process_frame(frame)
        if self._deciding and isinstance(frame, (TranscriptionFrame, InterimTranscriptionFrame)):
            await self._speculate()
        return result

    async def _handle_vad_user_started_speaking(self, frame: VADUserStartedSpeakingFrame):
        self._deciding = False
        await self._withdraw()
        await super()._handle_vad_user_started_speaking(frame)

    async def trigger_user_turn_stopped(self, *, enable_user_speaking_frames: bool | None = None):
        """End the turn, keeping the speculative reply if it answers the final transcript."""
        self._deciding = False
        speculation, self._speculation = self._speculation, None
        if speculation and self._match_policy.matches(speculation.text, self._turn_text()):
            await self.trigger_user_turn_finalized(
                enable_user_speaking_frames=enable_user_speaking_frames, confirms_speculation=True
            )
            return
        if speculation:
            await self.trigger_user_turn_speculation_cancelled()
        await super().trigger_user_turn_stopped(enable_user_speaking_frames=enable_user_speaking_frames)

    async def _reset(self, **kwargs):
        await self._withdraw()  # a turn ended some other way (idle, interruption, the call's end)
        self._finals, self._interim, self._deciding = [], "", False
        await super()._reset(**kwargs)

    async def _speculate(self):
        """Ask the LLM on the newest transcript, unless it is already answering the same words."""
        text = self._turn_text(self._interim)
        if not text:
            return
        if self._speculation and self._match_policy.matches(self._speculation.text, text):
            return
        await self._withdraw()
        self._speculation = UserTurnSpeculation(text=text)
        await self.trigger_user_turn_inference_triggered(speculation=self._speculation)

    async def _withdraw(self):
        if self._speculation:
            self._speculation = None
            await self.trigger_user_turn_speculation_cancelled()

    def _turn_text(self, interim: str = "") -> str:
        return " ".join(t for t in [*self._finals, interim] if t.strip())


class SpeculativeTurnAnalyzerStopStrategy(SpeculativeReplies, TurnAnalyzerUserTurnStopStrategy):
    """Pipecat's turn-analyzer (smart-turn) stop strategy, answering speculatively from VAD stop
    while the model judges."""

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame):
        self._deciding = True
        try:
            await self._speculate()
            await super()._handle_vad_user_stopped_speaking(frame)  # smart-turn judges here
        finally:
            self._deciding = False
        if not self._turn_complete:
            await self._withdraw()


class SpeculativeSpeechTimeoutStopStrategy(SpeculativeReplies, SpeechTimeoutUserTurnStopStrategy):
    """Pipecat's speech-timeout stop strategy, answering speculatively from VAD stop while the
    timeout runs."""

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame):
        self._deciding = True  # until the timeout ends the turn or the callee speaks again
        await self._speculate()
        await super()._handle_vad_user_stopped_speaking(frame)
