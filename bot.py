"""The voice bot: one Twilio media stream in, one conversation, then hang up.

`bot()` is the entry point for Pipecat Cloud and for Pipecat's development runner
(`uv run bot.py -t twilio -x <ngrok host>`); the dial-out server's `/ws` calls `run_call()`.

How a call flows:
1. Twilio opens the stream; its `start` message carries the call id and a stream token. (The
   console's test phone opens it the same way, from a browser: outcall/browser_calls.py.)
2. The token is checked before any speech or LLM service starts; a bad one closes the socket (1008).
3. The call's config (prompt, greeting, …) is claimed from the server with that token.
4. The bot greets at once (or waits for the callee), then listens, thinks and speaks. A greeting
   the server synthesised while the phone rang is sent before the pipeline even starts. Its tools:
   `end_call`, `record_outcome`, `press_keys` (keypad tones for phone menus) and, when a
   transfer number is set, `transfer_call`. Keys the callee presses reach the LLM as text.
5. After each turn the bot reports the transcript to the server (`/calls/{id}/report`).
6. The LLM's `end_call` tool, silence, the time limit, or the server draining for a shutdown
   ends the pipeline; the serializer then hangs the call up through Twilio's REST API (a test
   call has no Twilio call: closing the socket ends it). A callee hang-up ends it at once; a
   transfer hands the call to Twilio's `<Dial>`. A warm transfer nobody takes can come back in
   a new stream: that session starts from the conversation so far (`config.history`) and says
   so first (`config.resume_note`), and only its reports count (`config.bot_generation`).
7. A one-request summary (and the outcome, if the LLM recorded none), then the final report.

Steps 1–3 are the functions below; from step 4 on, a call is a `CallSession`, whose methods are
its event handlers, tools and timers, in that order.
"""

import asyncio
import base64
import sys
from functools import partial

from fastapi import WebSocket
from loguru import logger
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    FunctionCallResultProperties,
    LLMRunFrame,
    OutputDTMFFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.runner.types import CallData, RunnerArguments, WebSocketRunnerArguments
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.services.llm_service import FunctionCallParams
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

from outcall import prompts
from outcall.calls import CallClaimError, CallConfig, CallScript, render_call_config
from outcall.reports import CallProgress, CallReporter, RecordedOutcome, TranscriptTurn, TransferRequest
from outcall.server_link import HttpServerLink, ServerLink
from outcall.settings import Settings
from outcall.stream_auth import StreamTokenError, verify_stream_token
from outcall.values import Channel, EndReason, utcnow
from pipelines.call_tools import KEYPAD, call_tools
from pipelines.deepgram_stt import ChunkedDeepgramSTTService
from pipelines.default import SAMPLE_RATE, build_pipeline, create_stt
from pipelines.summary import DEFAULT_SUMMARY_PROMPT, can_summarise, summarise_call
from pipelines.twilio_stream import (
    MEDIA_CHUNK_MS,
    CallStreamSerializer,
    TwilioStreamSocket,
    TwilioStreamTransport,
    media_messages,
)

async def bot(runner_args: RunnerArguments):
    """Entry point for Pipecat Cloud and the development runner."""
    settings = Settings()
    configure_logging(settings)

    await run_call(runner_args, settings, HttpServerLink(settings.server_url))


async def run_call(runner_args: WebSocketRunnerArguments, settings: Settings, server: ServerLink):
    """Authenticate one Twilio stream, then talk until the call ends."""
    websocket = runner_args.websocket
    try:
        _, call_data = await parse_telephony_websocket(websocket)
    except ValueError as e:
        logger.warning(f"Stream closed before Twilio's start message: {e}")
        return
    config = await authenticate_stream(runner_args, call_data, settings, server)
    if config is None:
        await websocket.close(code=1008, reason="stream not authorised")
        return
    settings = config.call_settings(settings)  # an agent's outcomes, limits, voice and model
    greeting_secs = None
    if config.greeting_audio and not config.wait_for_callee:
        greeting_secs = await play_greeting(websocket, call_data.stream_id or "", base64.b64decode(config.greeting_audio))
    serializer = create_twilio_serializer(call_data, settings, hang_up=config.channel == Channel.PHONE)
    transport = create_twilio_transport(websocket, serializer)
    session = CallSession(transport, serializer, config, settings, server, greeting_secs=greeting_secs)
    await session.run(handle_sigint=runner_args.handle_sigint)


async def play_greeting(websocket: WebSocket, stream_sid: str, ulaw: bytes) -> float:
    """Send the greeting synthesised while the phone rang straight to Twilio, which buffers and
    plays it while the pipeline connects to its speech services. Returns its length in seconds."""
    for message in media_messages(stream_sid, ulaw):
        await websocket.send_text(message)
    return len(ulaw) / SAMPLE_RATE


async def authenticate_stream(
    runner_args: RunnerArguments, call_data: CallData, settings: Settings, server: ServerLink
) -> CallConfig | None:
    """The call's config if the stream's token proves it belongs to a call we placed, else None."""
    params = call_data.body
    token = params.get("stream_token")
    if token is None and runner_args.cli_args is not None:
        return development_runner_config(runner_args, call_data, settings)

    secret = settings.secret("stream_secret")
    if not secret:
        logger.error("Rejected a stream: STREAM_SECRET is not set, so no stream can be trusted")
        return None
    call_id = str(params.get("call_id", ""))
    try:
        verify_stream_token(
            secret,
            token,
            call_id=call_id,
            call_sid=call_data.call_id or "",
            to_number=str(params.get("to_number", "")),
            from_number=str(params.get("from_number", "")),
        )
        return await server.claim(call_id, token)
    except (StreamTokenError, CallClaimError) as e:
        logger.warning(f"Rejected stream for Twilio call {call_data.call_id}: {e}")
        return None


def development_runner_config(
    runner_args: RunnerArguments, call_data: CallData, settings: Settings
) -> CallConfig:
    """A call started through Pipecat's development runner, whose TwiML carries no token.

    Only the developer's own runner reaches this; variables come from its --runner-body file.
    """
    logger.warning("Development runner: this stream is not authenticated; never expose it in production")
    script = CallScript(variables=runner_args.body if isinstance(runner_args.body, dict) else {})
    return render_call_config(
        settings, script, call_id=call_data.call_id or "dev", to_number=call_data.to_number or "",
        from_number=call_data.from_number or "",
    )


def create_twilio_serializer(call_data: CallData, settings: Settings, hang_up: bool = True) -> CallStreamSerializer:
    """`hang_up`: end the Twilio call through the REST API when the bot ends (a test call has none)."""
    return CallStreamSerializer(
        stream_sid=call_data.stream_id or "",
        call_sid=call_data.call_id,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.secret("twilio_auth_token"),
        base_url=settings.twilio_api_base_url,
        params=CallStreamSerializer.InputParams(auto_hang_up=hang_up),
    )


def create_twilio_transport(websocket: WebSocket, serializer: CallStreamSerializer) -> TwilioStreamTransport:
    return TwilioStreamTransport(
        websocket=TwilioStreamSocket(websocket),
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
            audio_out_end_silence_secs=1,
            audio_out_10ms_chunks=MEDIA_CHUNK_MS // 10,
        ),
    )


class CallSession:
    """One call's conversation: its pipeline, what has been said and done so far, and the event
    handlers, tools and timers that decide how the call goes on and how it ends.

    `greeting_secs`: the greeting the server synthesised is already playing, this long.
    The pipeline is assembled in `run()`, once the server counts the call as live, so that a
    drain that begins meanwhile still gets its goodbye.
    """

    def __init__(
        self,
        transport: FastAPIWebsocketTransport,
        serializer: CallStreamSerializer,
        config: CallConfig,
        settings: Settings,
        server: ServerLink,
        greeting_secs: float | None = None,
    ):
        self.config = config
        self.settings = settings
        self.server = server
        self.serializer = serializer
        self.greeting_secs = greeting_secs
        self.log = logger.bind(call_id=config.call_id)
        self.progress = CallProgress(transcript=[TranscriptTurn.model_validate(turn) for turn in config.history])
        self.reporter = CallReporter(partial(server.report, config), config.call_id, generation=config.bot_generation)
        self.turn_latency: list[float] = []  # the response timer's measures, one per bot turn
        self.callee_turn_started_at = self.bot_turn_started_at = utcnow()
        self.idle_check_ins = 0
        self.callee_spoke = False
        self.transfer_requested = False
        self.transfer_note = TransferRequest()  # the LLM's reason and summary, for a warm transfer's whisper
        self.transport = transport
        self.pipeline = self.worker = None  # assembled in run(), once the call is live
        self.shutdown_requested = False

    def assemble(self, stt: ChunkedDeepgramSTTService) -> None:
        """The call's pipeline and worker, wired to this session's handlers and tools."""
        settings, config, transport = self.settings, self.config, self.transport
        self.pipeline = build_pipeline(
            transport, stt, settings, self._system_instruction(), call_tools(settings.call_outcomes, config.can_transfer)
        )
        self.worker = PipelineWorker(
            self.pipeline.pipeline,
            params=PipelineParams(
                audio_in_sample_rate=SAMPLE_RATE,
                audio_out_sample_rate=SAMPLE_RATE,
                enable_metrics=True,
            ),
            idle_timeout_secs=None,  # the callee's silence is handled below, politely
            # No observers: each one is handed every frame every processor pushes (50 audio
            # frames a second). RTVI speaks to web clients, not phones; turns are timed by
            # the pipeline's response timer.
            enable_rtvi=False,
            enable_turn_tracking=False,
        )
        self.worker.set_reached_upstream_filter((BotStoppedSpeakingFrame,))
        for turn in self.progress.transcript:  # a call back from a transfer: what was said before
            self.pipeline.context.add_message({"role": "assistant" if turn.speaker == "bot" else "user", "content": turn.text})

        transport.add_event_handler("on_client_connected", self.on_client_connected)
        transport.add_event_handler("on_client_disconnected", self.on_client_disconnected)
        self.pipeline.user_aggregator.add_event_handler("on_user_turn_started", self.on_user_turn_started)
        self.pipeline.user_aggregator.add_event_handler("on_user_turn_stopped", self.on_user_turn_stopped)
        self.pipeline.user_aggregator.add_event_handler("on_user_turn_idle", self.on_user_turn_idle)
        self.pipeline.response_timer.add_event_handler("on_response_latency", self.on_response_latency)
        self.pipeline.assistant_aggregator.add_event_handler("on_assistant_turn_started", self.on_assistant_turn_started)
        self.pipeline.assistant_aggregator.add_event_handler("on_assistant_turn_stopped", self.on_assistant_turn_stopped)
        self.worker.add_event_handler("on_frame_reached_upstream", self.on_frame_reached_upstream)
        for tool in (self.end_call, self.record_outcome, self.press_keys, self.transfer_call):
            self.pipeline.llm.register_function(tool.__name__, tool)

    def _system_instruction(self) -> str:
        if not self.config.wait_for_callee:
            return self.config.system_instruction
        return f'{self.config.system_instruction}\n\nThe person speaks first. Answer them with this greeting: "{self.config.greeting}"'

    async def run(self, handle_sigint: bool = False) -> None:
        """Talk until the call ends, then summarise it and send the final report."""
        self.server.call_started(self.config.call_id, self.end_for_shutdown)
        timers = []
        try:
            self.assemble(await create_stt(self.settings))
            if self.shutdown_requested:  # the server began draining while the pipeline was assembled
                await self.end_for_shutdown()
            timers.append(asyncio.create_task(self.enforce_time_limit()))
            if self.greeting_secs is not None:
                self.pipeline.context.add_message({"role": "assistant", "content": self.config.greeting})
                self.progress.transcript.append(TranscriptTurn(speaker="bot", text=self.config.greeting, started_at=utcnow()))
                self.reporter.report_progress(self.progress.report())
                timers.append(asyncio.create_task(self.check_in_after_greeting()))
            runner = WorkerRunner(handle_sigint=handle_sigint)
            await runner.add_workers(self.worker)
            await runner.run()
        except Exception:
            self.progress.end(EndReason.ERROR)
            self.log.exception("The call's pipeline failed")
        finally:
            for task in timers:
                task.cancel()
            try:
                await self.finish()
            finally:
                self.server.call_finished(self.config.call_id)
        self.log.info(f"Call {self.config.call_id} finished ({self.progress.end_reason})")

    # --- the stream ---------------------------------------------------------------------------

    async def on_client_connected(self, transport, client):
        self.log.info(f"Call {self.config.call_id} connected to {self.config.to_number}")
        if self.config.resume_note:  # back from a transfer nobody took: the LLM says so first
            self.pipeline.context.add_message({"role": "user", "content": f"[{self.config.resume_note}]"})
            await self.worker.queue_frame(LLMRunFrame())
        elif not self.config.wait_for_callee and self.greeting_secs is None:
            await self.worker.queue_frame(TTSSpeakFrame(self.config.greeting))

    async def on_client_disconnected(self, transport, client):
        self.log.info("Stream closed by Twilio (callee hung up, or the call moved on)")
        self.progress.end(EndReason.CALLEE_HUNG_UP)
        await self.worker.cancel()

    # --- turns: the transcript, reported as it grows ------------------------------------------

    async def on_user_turn_started(self, aggregator, strategy):
        self.idle_check_ins = 0
        self.callee_spoke = True
        self.callee_turn_started_at = utcnow()

    async def on_user_turn_stopped(self, aggregator, strategy, message):
        self.log.info(f"callee: {message.content!r}")
        self.progress.transcript.append(
            TranscriptTurn(speaker="callee", text=message.content, started_at=self.callee_turn_started_at)
        )
        self.reporter.report_progress(self.progress.report())

    async def on_response_latency(self, timer, seconds: float):
        self.turn_latency.append(seconds)

    async def on_assistant_turn_started(self, aggregator):
        self.bot_turn_started_at = utcnow()

    async def on_assistant_turn_stopped(self, aggregator, message):
        latency_ms = round(self.turn_latency.pop() * 1000) if self.turn_latency else None
        measured = f" (responded in {latency_ms} ms)" if latency_ms is not None else ""
        interrupted = " [interrupted]" if message.interrupted else ""
        self.log.info(f"bot: {message.content!r}{interrupted}{measured}")
        if message.content:
            self.progress.transcript.append(
                TranscriptTurn(
                    speaker="bot",
                    text=message.content,
                    started_at=self.bot_turn_started_at,
                    latency_ms=latency_ms,
                    interrupted=message.interrupted,
                )
            )
            self.reporter.report_progress(self.progress.report())

    # --- silence: check in once, then say goodbye ---------------------------------------------

    async def on_user_turn_idle(self, aggregator):
        self.idle_check_ins += 1
        if self.idle_check_ins == 1:
            await self.worker.queue_frame(TTSSpeakFrame(prompts.CHECK_IN))
        elif self.idle_check_ins == 2:
            await self.say_goodbye(prompts.IDLE_GOODBYE, EndReason.IDLE_TIMEOUT)

    async def check_in_after_greeting(self):
        # Pipecat's idle timer starts when the bot stops speaking; it never saw this greeting.
        await asyncio.sleep(self.greeting_secs + self.settings.idle_timeout_secs)
        if not self.callee_spoke:
            await self.on_user_turn_idle(self.pipeline.user_aggregator)

    # --- the LLM's tools (schemas in pipelines/call_tools.py) ---------------------------------

    async def end_call(self, params: FunctionCallParams):
        reason = params.arguments.get("reason", "conversation finished")
        await params.result_callback({"ended": True}, properties=FunctionCallResultProperties(run_llm=False))
        self.log.info(f"Ending call: LLM called end_call ({reason})")
        self.progress.end(EndReason.BOT_ENDED)
        await params.llm.push_frame(EndWorkerFrame(reason=f"end_call: {reason}"))

    async def record_outcome(self, params: FunctionCallParams):
        outcome = params.arguments.get("outcome")
        if outcome not in self.settings.call_outcomes:
            await params.result_callback({"error": f"outcome must be one of {', '.join(self.settings.call_outcomes)}"})
            return
        self.progress.outcome = RecordedOutcome(
            outcome=outcome,
            notes=str(params.arguments.get("notes", ""))[:2000],
            callback_time=str(params.arguments["callback_time"])[:64] if params.arguments.get("callback_time") else None,
        )
        self.log.info(f"Outcome: {outcome}")
        self.reporter.report_progress(self.progress.report())
        await params.result_callback({"recorded": outcome})

    async def press_keys(self, params: FunctionCallParams):
        keys = "".join(k for k in str(params.arguments.get("keys", "")) if k in KEYPAD)
        if not keys:
            await params.result_callback({"error": "keys must be digits, * or #"})
            return
        self.log.info(f"Pressing keys {keys}")
        self.progress.transcript.append(TranscriptTurn(speaker="bot", text=f"[pressed {keys}]", started_at=utcnow()))
        await params.llm.push_frame(OutputDTMFFrame.from_string(keys))
        await params.result_callback({"pressed": keys}, properties=FunctionCallResultProperties(run_llm=False))

    async def transfer_call(self, params: FunctionCallParams):
        await params.result_callback({"transferring": True}, properties=FunctionCallResultProperties(run_llm=False))
        self.log.info("Transferring the call once the handoff line has played")
        self.transfer_note = TransferRequest(
            reason=str(params.arguments.get("reason", ""))[:300], summary=str(params.arguments.get("summary", ""))[:600]
        )
        self.transfer_requested = True
        await params.llm.push_frame(TTSSpeakFrame(prompts.TRANSFER_LINE))

    async def on_frame_reached_upstream(self, worker, frame):
        """The handoff line has been spoken: ask the server to hand the call to a person."""
        if isinstance(frame, BotStoppedSpeakingFrame) and self.transfer_requested:
            self.transfer_requested = False
            self.serializer.release_call()
            if await self.server.transfer(self.config, self.transfer_note):
                self.progress.end(EndReason.TRANSFERRED)
            else:
                self.serializer.keep_call()
                await self.say_goodbye(prompts.TRANSFER_FAILED, EndReason.ERROR)

    # --- endings ------------------------------------------------------------------------------

    async def enforce_time_limit(self):
        await asyncio.sleep(self.config.max_duration_secs)
        await self.say_goodbye(prompts.MAX_DURATION_GOODBYE, EndReason.MAX_DURATION)

    async def end_for_shutdown(self):
        """The server is draining for a restart (before the pipeline is assembled, run() says
        goodbye as soon as it is)."""
        self.shutdown_requested = True
        if self.worker is not None:
            await self.say_goodbye(prompts.SHUTDOWN_GOODBYE, EndReason.SERVER_SHUTDOWN)

    async def say_goodbye(self, text: str, reason: EndReason):
        self.log.info(f"Ending call: {reason}")
        self.progress.end(reason)
        await self.worker.queue_frames([TTSSpeakFrame(text), EndWorkerFrame(reason=reason.value)])

    async def finish(self):
        """Summarise the conversation (and find its outcome, if none was recorded, and the analysis
        fields), then report it."""
        if self.progress.had_conversation() and can_summarise(self.settings):
            answer = await summarise_call(
                self.settings,
                self.settings.summary_prompt or DEFAULT_SUMMARY_PROMPT,
                self.settings.call_outcomes,
                self.progress.transcript_text(),
                need_outcome=self.progress.outcome is None,
                analysis_fields=self.config.analysis_fields,
            )
            self.progress.summary = answer.summary
            self.progress.outcome = self.progress.outcome or answer.outcome
            if self.config.analysis_fields:
                self.progress.analysis, self.progress.analysis_errors = answer.analysis, answer.analysis_errors
        await self.reporter.report_final(self.progress.report())


def configure_logging(settings: Settings):
    logger.remove()
    logger.add(sys.stderr, level=settings.log_level.upper())


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
