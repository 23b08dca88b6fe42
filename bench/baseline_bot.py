"""The baseline: a plain Pipecat phone bot, built the way Pipecat's `twilio-chatbot/outbound`
example builds its `bot.py`, served by a minimal FastAPI app (`POST /twiml`, `WS /ws`).

    PORT=… TWILIO_ACCOUNT_SID=… DEEPGRAM_BASE_URL=… uv run python bench/baseline_bot.py

Same services as outcall (Deepgram, Gemini, Cartesia at 8 kHz), same Twilio serializer and
transport, same Silero VAD; it differs only where the example does. Two things are aligned
so the figures compare like with like: it says the same greeting through TTS (the example
waits for the callee), and it ends turns as outcall's server in the same run does: the same
speech timeout, or (TURN_STOP=smart_turn) Pipecat's smart-turn v3, a model per call as the
example has it.
It logs at INFO (the example logs DEBUG, which would cost it CPU outcall does not spend).
"""

import os
import sys

import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response
from google.genai.types import HttpOptions
from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair, LLMUserAggregatorParams
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.google.llm import GoogleLLMService
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy, TurnAnalyzerUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

logger.remove()
logger.add(sys.stderr, level="INFO")

GREETING = os.getenv("BOT_GREETING", "Hello! This is an automated assistant calling. Do you have a moment to talk?")


def turn_stop_strategy():
    """Smart-turn as the example has it (TURN_STOP=smart_turn), else the speech timeout."""
    if os.getenv("TURN_STOP") == "smart_turn":
        return TurnAnalyzerUserTurnStopStrategy(turn_analyzer=LocalSmartTurnAnalyzerV3())
    return SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=float(os.getenv("USER_SPEECH_TIMEOUT_SECS", "0.6")))


async def run_bot(transport: FastAPIWebsocketTransport):
    llm = GoogleLLMService(
        api_key=os.getenv("GOOGLE_API_KEY"),
        http_options=HttpOptions(base_url=os.getenv("GOOGLE_API_BASE_URL")),
        settings=GoogleLLMService.Settings(
            system_instruction="You are a friendly assistant making an outbound phone call. Keep replies short."
        ),
    )
    stt = DeepgramSTTService(api_key=os.getenv("DEEPGRAM_API_KEY"), base_url=os.getenv("DEEPGRAM_BASE_URL"))
    tts = CartesiaTTSService(
        api_key=os.getenv("CARTESIA_API_KEY"),
        url=os.getenv("CARTESIA_URL"),
        settings=CartesiaTTSService.Settings(voice="71a7ad14-091c-4e8e-a314-022ece01c121"),
    )

    context = LLMContext()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=SileroVADAnalyzer(),
            user_turn_strategies=UserTurnStrategies(stop=[turn_stop_strategy()]),
        ),
    )

    pipeline = Pipeline(
        [
            transport.input(),  # Websocket input from client
            stt,  # Speech-To-Text
            user_aggregator,
            llm,  # LLM
            tts,  # Text-To-Speech
            transport.output(),  # Websocket output to client
            assistant_aggregator,
        ]
    )

    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=8000,
            audio_out_sample_rate=8000,
            enable_metrics=True,
            enable_usage_metrics=True,
        ),
    )

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport, client):
        await worker.queue_frame(TTSSpeakFrame(GREETING))

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


async def bot(websocket: WebSocket):
    _, call_data = await parse_telephony_websocket(websocket)
    serializer = TwilioFrameSerializer(
        stream_sid=call_data.stream_id,
        call_sid=call_data.call_id,
        account_sid=os.getenv("TWILIO_ACCOUNT_SID", ""),
        auth_token=os.getenv("TWILIO_AUTH_TOKEN", ""),
        base_url=os.getenv("TWILIO_API_BASE_URL"),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
    await run_bot(transport)


app = FastAPI()


@app.post("/twiml")
async def twiml(request: Request):
    host = request.url.netloc
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="ws://{host}/ws"/></Connect></Response>',
        media_type="application/xml",
    )


@app.get("/health")
async def health():
    return {"ok": True}


@app.websocket("/ws")
async def media_stream(websocket: WebSocket):
    await websocket.accept()
    await bot(websocket)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
