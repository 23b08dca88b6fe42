"""The voice bot: one Twilio media stream in, one conversation, then hang up.

`bot()` is the entry point for Pipecat Cloud and for Pipecat's development runner
(`uv run bot.py -t twilio -x <ngrok host>`); the dial-out server's `/ws` calls `run_call()`.

How a call flows:
1. Twilio opens the stream; its `start` message carries the call id and a stream token.
2. The token is checked before any speech or LLM service starts; a bad one closes the socket (1008).
3. The call's config (prompt, greeting, …) is claimed from the server with that token.
4. The bot greets at once (or waits for the callee), then listens, thinks and speaks.
5. The LLM's `end_call` tool, silence, or the time limit ends the pipeline; the serializer
   then hangs the call up through Twilio's REST API. A callee hang-up ends it at once.
"""

import asyncio
import sys
from collections.abc import Awaitable, Callable

from fastapi import WebSocket
from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import EndWorkerFrame, FunctionCallResultProperties, TTSSpeakFrame
from pipecat.observers.user_bot_latency_observer import UserBotLatencyObserver
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.runner.types import CallData, RunnerArguments, WebSocketRunnerArguments
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.llm_service import FunctionCallParams
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

from outcall import prompts
from outcall.calls import CallClaimError, CallConfig, fetch_call_config, render_call_config
from outcall.settings import Settings
from outcall.stream_auth import StreamTokenError, verify_stream_token
from pipelines.default import SAMPLE_RATE, build_pipeline

ClaimCall = Callable[[str, str], Awaitable[CallConfig]]

END_CALL = FunctionSchema(
    name="end_call",
    description="Hang up the phone call. Say a short goodbye first, then call this.",
    properties={"reason": {"type": "string", "description": "Why the call is ending, in a few words."}},
    required=[],
)


async def bot(runner_args: RunnerArguments):
    """Entry point for Pipecat Cloud and the development runner."""
    settings = Settings()
    configure_logging(settings)

    async def claim(call_id: str, token: str) -> CallConfig:
        return await fetch_call_config(settings.server_url, call_id, token)

    await run_call(runner_args, settings, claim)


async def run_call(runner_args: WebSocketRunnerArguments, settings: Settings, claim: ClaimCall):
    """Authenticate one Twilio stream, then talk until the call ends."""
    websocket = runner_args.websocket
    try:
        _, call_data = await parse_telephony_websocket(websocket)
    except ValueError as e:
        logger.warning(f"Stream closed before Twilio's start message: {e}")
        return
    config = await authenticate_stream(runner_args, call_data, settings, claim)
    if config is None:
        await websocket.close(code=1008, reason="stream not authorised")
        return
    transport = create_twilio_transport(websocket, call_data, settings)
    await run_bot(transport, config, settings, handle_sigint=runner_args.handle_sigint)


async def authenticate_stream(
    runner_args: RunnerArguments, call_data: CallData, settings: Settings, claim: ClaimCall
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
        return await claim(call_id, token)
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
    return render_call_config(
        settings,
        call_id=call_data.call_id or "dev",
        to_number=call_data.to_number or "",
        from_number=call_data.from_number or "",
        variables=runner_args.body if isinstance(runner_args.body, dict) else {},
    )


def create_twilio_transport(
    websocket: WebSocket, call_data: CallData, settings: Settings
) -> FastAPIWebsocketTransport:
    serializer = TwilioFrameSerializer(
        stream_sid=call_data.stream_id or "",
        call_sid=call_data.call_id,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.secret("twilio_auth_token"),
        base_url=settings.twilio_api_base_url,
    )
    return FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
            audio_out_end_silence_secs=1,
        ),
    )


async def run_bot(
    transport: FastAPIWebsocketTransport, config: CallConfig, settings: Settings, handle_sigint: bool = False
):
    system_instruction = config.system_instruction
    if config.wait_for_callee:
        system_instruction += f'\n\nThe person speaks first. Answer them with this greeting: "{config.greeting}"'
    call = build_pipeline(transport, settings, system_instruction, ToolsSchema(standard_tools=[END_CALL]))
    latency = UserBotLatencyObserver()
    worker = PipelineWorker(
        call.pipeline,
        params=PipelineParams(
            audio_in_sample_rate=SAMPLE_RATE,
            audio_out_sample_rate=SAMPLE_RATE,
            enable_metrics=True,
        ),
        observers=[latency],
        idle_timeout_secs=None,  # the callee's silence is handled below, politely
    )
    log = logger.bind(call_id=config.call_id)
    turn_latency: list[float] = []
    idle_check_ins = 0

    async def say_goodbye(text: str, reason: str):
        log.info(f"Ending call: {reason}")
        await worker.queue_frames([TTSSpeakFrame(text), EndWorkerFrame(reason=reason)])

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport, client):
        log.info(f"Call {config.call_id} connected to {config.to_number}")
        if not config.wait_for_callee:
            await worker.queue_frame(TTSSpeakFrame(config.greeting))

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        log.info("Callee hung up")
        await worker.cancel()

    @latency.event_handler("on_latency_measured")
    async def on_latency_measured(observer, seconds: float):
        turn_latency.append(seconds)

    @call.user_aggregator.event_handler("on_user_turn_started")
    async def on_user_turn_started(aggregator, strategy):
        nonlocal idle_check_ins
        idle_check_ins = 0

    @call.user_aggregator.event_handler("on_user_turn_stopped")
    async def on_user_turn_stopped(aggregator, strategy, message):
        log.info(f"callee: {message.content!r}")

    @call.assistant_aggregator.event_handler("on_assistant_turn_stopped")
    async def on_assistant_turn_stopped(aggregator, message):
        measured = f" (responded in {turn_latency.pop() * 1000:.0f} ms)" if turn_latency else ""
        interrupted = " [interrupted]" if message.interrupted else ""
        log.info(f"bot: {message.content!r}{interrupted}{measured}")

    @call.user_aggregator.event_handler("on_user_turn_idle")
    async def on_user_turn_idle(aggregator):
        nonlocal idle_check_ins
        idle_check_ins += 1
        if idle_check_ins == 1:
            await worker.queue_frame(TTSSpeakFrame(prompts.CHECK_IN))
        elif idle_check_ins == 2:
            await say_goodbye(prompts.IDLE_GOODBYE, "callee silent")

    async def end_call(params: FunctionCallParams):
        reason = params.arguments.get("reason", "conversation finished")
        await params.result_callback({"ended": True}, properties=FunctionCallResultProperties(run_llm=False))
        log.info(f"Ending call: LLM called end_call ({reason})")
        await params.llm.push_frame(EndWorkerFrame(reason=f"end_call: {reason}"))

    call.llm.register_function("end_call", end_call)

    async def enforce_time_limit():
        await asyncio.sleep(config.max_duration_secs)
        await say_goodbye(prompts.MAX_DURATION_GOODBYE, "maximum call duration reached")

    time_limit = asyncio.create_task(enforce_time_limit())
    try:
        runner = WorkerRunner(handle_sigint=handle_sigint)
        await runner.add_workers(worker)
        await runner.run()
    finally:
        time_limit.cancel()
    log.info(f"Call {config.call_id} finished")


def configure_logging(settings: Settings):
    logger.remove()
    logger.add(sys.stderr, level=settings.log_level.upper())


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
