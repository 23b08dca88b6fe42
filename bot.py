"""The voice bot: one Twilio media stream in, one conversation, then hang up.

`bot()` is the entry point for Pipecat Cloud and for Pipecat's development runner
(`uv run bot.py -t twilio -x <ngrok host>`); the dial-out server's `/ws` calls `run_call()`.

How a call flows:
1. Twilio opens the stream; its `start` message carries the call id and a stream token.
2. The token is checked before any speech or LLM service starts; a bad one closes the socket (1008).
3. The call's config (prompt, greeting, …) is claimed from the server with that token.
4. The bot greets at once (or waits for the callee), then listens, thinks and speaks. A greeting
   the server synthesised while the phone rang is sent before the pipeline even starts. Its tools:
   `end_call`, `record_outcome`, `press_keys` (keypad tones for phone menus) and, when a
   transfer number is set, `transfer_call`. Keys the callee presses reach the LLM as text.
5. After each turn the bot reports the transcript to the server (`/calls/{id}/report`).
6. The LLM's `end_call` tool, silence, the time limit, or the server draining for a shutdown
   ends the pipeline; the serializer then hangs the call up through Twilio's REST API. A
   callee hang-up ends it at once; a transfer hands the call to Twilio's `<Dial>`.
7. A one-request summary (and the outcome, if the LLM recorded none), then the final report.
"""

import asyncio
import base64
import sys
from functools import partial

from fastapi import WebSocket
from loguru import logger
from google import genai
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    FunctionCallResultProperties,
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
from outcall.reports import CallProgress, CallReporter, RecordedOutcome, TranscriptTurn
from outcall.server_link import HttpServerLink, ServerLink
from outcall.settings import Settings
from outcall.stream_auth import StreamTokenError, verify_stream_token
from outcall.values import EndReason, utcnow
from pipelines.call_tools import KEYPAD, call_tools
from pipelines.default import SAMPLE_RATE, build_pipeline, google_http_options
from pipelines.summary import DEFAULT_SUMMARY_PROMPT, summarise_call
from pipelines.twilio_stream import CallStreamSerializer, TwilioStreamSocket, media_messages

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
    greeting_secs = None
    if config.greeting_audio and not config.wait_for_callee:
        greeting_secs = await play_greeting(websocket, call_data.stream_id or "", base64.b64decode(config.greeting_audio))
    serializer = create_twilio_serializer(call_data, settings)
    transport = create_twilio_transport(websocket, serializer)
    await run_bot(
        transport, serializer, config, settings, server, handle_sigint=runner_args.handle_sigint, greeting_secs=greeting_secs
    )


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


def create_twilio_serializer(call_data: CallData, settings: Settings) -> CallStreamSerializer:
    return CallStreamSerializer(
        stream_sid=call_data.stream_id or "",
        call_sid=call_data.call_id,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.secret("twilio_auth_token"),
        base_url=settings.twilio_api_base_url,
    )


def create_twilio_transport(websocket: WebSocket, serializer: CallStreamSerializer) -> FastAPIWebsocketTransport:
    return FastAPIWebsocketTransport(
        websocket=TwilioStreamSocket(websocket),
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
            audio_out_end_silence_secs=1,
        ),
    )


async def run_bot(
    transport: FastAPIWebsocketTransport,
    serializer: CallStreamSerializer,
    config: CallConfig,
    settings: Settings,
    server: ServerLink,
    handle_sigint: bool = False,
    greeting_secs: float | None = None,
):
    """Run the conversation. `greeting_secs`: the greeting is already playing, this long."""
    system_instruction = config.system_instruction
    if config.wait_for_callee:
        system_instruction += f'\n\nThe person speaks first. Answer them with this greeting: "{config.greeting}"'
    call = build_pipeline(transport, settings, system_instruction, call_tools(settings.call_outcomes, config.can_transfer))
    worker = PipelineWorker(
        call.pipeline,
        params=PipelineParams(
            audio_in_sample_rate=SAMPLE_RATE,
            audio_out_sample_rate=SAMPLE_RATE,
            enable_metrics=True,
        ),
        idle_timeout_secs=None,  # the callee's silence is handled below, politely
        # No observers: each one is handed every frame every processor pushes (50 audio
        # frames a second). RTVI speaks to web clients, not phones; turns are timed by
        # call.response_timer.
        enable_rtvi=False,
        enable_turn_tracking=False,
    )
    worker.set_reached_upstream_filter((BotStoppedSpeakingFrame,))
    log = logger.bind(call_id=config.call_id)
    progress = CallProgress()
    reporter = CallReporter(partial(server.report, config), config.call_id)
    turn_latency: list[float] = []
    turn_started_at = {"callee": utcnow(), "bot": utcnow()}
    idle_check_ins = 0
    callee_spoke = False
    transfer_requested = False

    async def say_goodbye(text: str, reason: EndReason):
        log.info(f"Ending call: {reason}")
        progress.end(reason)
        await worker.queue_frames([TTSSpeakFrame(text), EndWorkerFrame(reason=reason.value)])

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport, client):
        log.info(f"Call {config.call_id} connected to {config.to_number}")
        if not config.wait_for_callee and greeting_secs is None:
            await worker.queue_frame(TTSSpeakFrame(config.greeting))

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        log.info("Stream closed by Twilio (callee hung up, or the call moved on)")
        progress.end(EndReason.CALLEE_HUNG_UP)
        await worker.cancel()

    @call.response_timer.event_handler("on_response_latency")
    async def on_response_latency(timer, seconds: float):
        turn_latency.append(seconds)

    @call.user_aggregator.event_handler("on_user_turn_started")
    async def on_user_turn_started(aggregator, strategy):
        nonlocal idle_check_ins, callee_spoke
        idle_check_ins = 0
        callee_spoke = True
        turn_started_at["callee"] = utcnow()

    @call.user_aggregator.event_handler("on_user_turn_stopped")
    async def on_user_turn_stopped(aggregator, strategy, message):
        log.info(f"callee: {message.content!r}")
        progress.transcript.append(
            TranscriptTurn(speaker="callee", text=message.content, started_at=turn_started_at["callee"])
        )
        reporter.report_progress(progress.report())

    @call.assistant_aggregator.event_handler("on_assistant_turn_started")
    async def on_assistant_turn_started(aggregator):
        turn_started_at["bot"] = utcnow()

    @call.assistant_aggregator.event_handler("on_assistant_turn_stopped")
    async def on_assistant_turn_stopped(aggregator, message):
        latency_ms = round(turn_latency.pop() * 1000) if turn_latency else None
        measured = f" (responded in {latency_ms} ms)" if latency_ms is not None else ""
        interrupted = " [interrupted]" if message.interrupted else ""
        log.info(f"bot: {message.content!r}{interrupted}{measured}")
        if message.content:
            progress.transcript.append(
                TranscriptTurn(
                    speaker="bot",
                    text=message.content,
                    started_at=turn_started_at["bot"],
                    latency_ms=latency_ms,
                    interrupted=message.interrupted,
                )
            )
            reporter.report_progress(progress.report())

    @call.user_aggregator.event_handler("on_user_turn_idle")
    async def on_user_turn_idle(aggregator):
        nonlocal idle_check_ins
        idle_check_ins += 1
        if idle_check_ins == 1:
            await worker.queue_frame(TTSSpeakFrame(prompts.CHECK_IN))
        elif idle_check_ins == 2:
            await say_goodbye(prompts.IDLE_GOODBYE, EndReason.IDLE_TIMEOUT)

    async def end_call(params: FunctionCallParams):
        reason = params.arguments.get("reason", "conversation finished")
        await params.result_callback({"ended": True}, properties=FunctionCallResultProperties(run_llm=False))
        log.info(f"Ending call: LLM called end_call ({reason})")
        progress.end(EndReason.BOT_ENDED)
        await params.llm.push_frame(EndWorkerFrame(reason=f"end_call: {reason}"))

    async def record_outcome(params: FunctionCallParams):
        outcome = params.arguments.get("outcome")
        if outcome not in settings.call_outcomes:
            await params.result_callback({"error": f"outcome must be one of {', '.join(settings.call_outcomes)}"})
            return
        progress.outcome = RecordedOutcome(
            outcome=outcome,
            notes=str(params.arguments.get("notes", ""))[:2000],
            callback_time=str(params.arguments["callback_time"])[:64] if params.arguments.get("callback_time") else None,
        )
        log.info(f"Outcome: {outcome}")
        reporter.report_progress(progress.report())
        await params.result_callback({"recorded": outcome})

    async def press_keys(params: FunctionCallParams):
        keys = "".join(k for k in str(params.arguments.get("keys", "")) if k in KEYPAD)
        if not keys:
            await params.result_callback({"error": "keys must be digits, * or #"})
            return
        log.info(f"Pressing keys {keys}")
        progress.transcript.append(TranscriptTurn(speaker="bot", text=f"[pressed {keys}]", started_at=utcnow()))
        await params.llm.push_frame(OutputDTMFFrame.from_string(keys))
        await params.result_callback({"pressed": keys}, properties=FunctionCallResultProperties(run_llm=False))

    async def transfer_call(params: FunctionCallParams):
        nonlocal transfer_requested
        await params.result_callback({"transferring": True}, properties=FunctionCallResultProperties(run_llm=False))
        log.info("Transferring the call once the handoff line has played")
        transfer_requested = True
        await params.llm.push_frame(TTSSpeakFrame(prompts.TRANSFER_LINE))

    @worker.event_handler("on_frame_reached_upstream")
    async def on_frame_reached_upstream(worker, frame):
        nonlocal transfer_requested
        if isinstance(frame, BotStoppedSpeakingFrame) and transfer_requested:
            transfer_requested = False
            serializer.release_call()
            if await server.transfer(config):
                progress.end(EndReason.TRANSFERRED)
            else:
                serializer.call_released = False
                await say_goodbye(prompts.TRANSFER_FAILED, EndReason.ERROR)

    call.llm.register_function("end_call", end_call)
    call.llm.register_function("record_outcome", record_outcome)
    call.llm.register_function("press_keys", press_keys)
    call.llm.register_function("transfer_call", transfer_call)

    async def enforce_time_limit():
        await asyncio.sleep(config.max_duration_secs)
        await say_goodbye(prompts.MAX_DURATION_GOODBYE, EndReason.MAX_DURATION)

    async def check_in_after_greeting():
        # Pipecat's idle timer starts when the bot stops speaking; it never saw this greeting.
        await asyncio.sleep(greeting_secs + settings.idle_timeout_secs)
        if not callee_spoke:
            await on_user_turn_idle(call.user_aggregator)

    async def end_for_shutdown():
        await say_goodbye(prompts.SHUTDOWN_GOODBYE, EndReason.SERVER_SHUTDOWN)

    server.call_started(config.call_id, end_for_shutdown)
    background = [asyncio.create_task(enforce_time_limit())]
    if greeting_secs is not None:
        call.context.add_message({"role": "assistant", "content": config.greeting})
        progress.transcript.append(TranscriptTurn(speaker="bot", text=config.greeting, started_at=utcnow()))
        reporter.report_progress(progress.report())
        background.append(asyncio.create_task(check_in_after_greeting()))
    try:
        runner = WorkerRunner(handle_sigint=handle_sigint)
        await runner.add_workers(worker)
        await runner.run()
    except Exception:
        progress.end(EndReason.ERROR)
        log.exception("The call's pipeline failed")
    finally:
        for task in background:
            task.cancel()
        try:
            await finish_call(progress, reporter, settings)
        finally:
            server.call_finished(config.call_id)
    log.info(f"Call {config.call_id} finished ({progress.end_reason})")


async def finish_call(progress: CallProgress, reporter: CallReporter, settings: Settings):
    """Summarise the conversation (and find its outcome, if none was recorded), then report it."""
    api_key = settings.secret("google_api_key")
    if progress.had_conversation() and api_key:
        client = genai.Client(api_key=api_key, http_options=google_http_options(settings))
        summary, outcome = await summarise_call(
            client,
            settings.google_model,
            settings.summary_prompt or DEFAULT_SUMMARY_PROMPT,
            settings.call_outcomes,
            progress.transcript_text(),
            need_outcome=progress.outcome is None,
        )
        progress.summary = summary
        progress.outcome = progress.outcome or outcome
    await reporter.report_final(progress.report())


def configure_logging(settings: Settings):
    logger.remove()
    logger.add(sys.stderr, level=settings.log_level.upper())


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
