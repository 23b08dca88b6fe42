"""The default call pipeline: Deepgram speech-to-text → Google Gemini (or any OpenAI-compatible
chat-completions endpoint, LLM_PROVIDER=openai) → Cartesia text-to-speech.

Telephony audio is 8 kHz μ-law; every service runs at 8 kHz so nothing is resampled.
Silero VAD (one model shared by the process's calls, see telephony_vad.py) hears speech start
and stop; Pipecat's smart-turn v3 model (shipped inside pipecat, one session per process, see
smart_turn.py) decides when the callee has finished their turn, while the LLM already answers
the transcript in hand (speculative_turn.py). The callee's audio goes no further than the user
aggregator.
"""

import asyncio
import os
import ssl
from dataclasses import dataclass
from functools import cache

import certifi

from google.genai.types import HttpOptions
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.dtmf_aggregator import DTMFAggregator
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregator,
    LLMContextAggregatorPair,
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.google.llm import GoogleLLMService
from pipecat.services.llm_service import LLMService
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy, TurnAnalyzerUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from outcall.settings import Settings
from pipelines import smart_turn, telephony_vad
from pipelines.audio_stops import StopBotAudio, StopCalleeAudio
from pipelines.response_timer import ResponseTimer
from pipelines.smart_turn import SharedSmartTurnAnalyzer
from pipelines.speculative_turn import SpeculativeSpeechTimeoutStopStrategy, SpeculativeTurnAnalyzerStopStrategy
from pipelines.deepgram_stt import ChunkedDeepgramSTTService
from pipelines.telephony_vad import TelephonyVADAnalyzer

SAMPLE_RATE = 8000


@dataclass
class CallPipeline:
    """A built pipeline and the parts of it the bot wires events to."""

    pipeline: Pipeline
    context: LLMContext
    llm: LLMService
    user_aggregator: LLMUserAggregator
    assistant_aggregator: LLMAssistantAggregator
    response_timer: ResponseTimer


async def create_stt(settings: Settings) -> ChunkedDeepgramSTTService:
    """Deepgram's service, built on a worker thread. Its SDK builds a client for Deepgram's REST
    API with every service, which loads the CA bundle: 28–36 ms of CPU that the streaming
    connection never uses. On the event loop that held up every other call (each call's
    greeting included) as a call started: the loop stalled 50 ms. OpenSSL loads the bundle
    without the interpreter lock, so on a thread the loop stalls ~2 ms."""
    return await asyncio.to_thread(_deepgram_stt, settings)


def _deepgram_stt(settings: Settings) -> ChunkedDeepgramSTTService:
    return ChunkedDeepgramSTTService(
        api_key=settings.secret("deepgram_api_key") or "",
        base_url=settings.deepgram_base_url,
        sample_rate=SAMPLE_RATE,
        settings=ChunkedDeepgramSTTService.Settings(
            model=settings.deepgram_model, language=settings.deepgram_language
        ),
    )


@cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every call's Gemini client: parsing the CA bundle costs ~20 ms of CPU,
    and google-genai would otherwise do it three times for each call, as the call starts."""
    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE", certifi.where()))


def google_http_options(settings: Settings) -> HttpOptions:
    """Gemini client options: the configured API root and the shared TLS context."""
    tls = tls_context()
    return HttpOptions(
        base_url=settings.google_api_base_url,
        client_args={"verify": tls},
        async_client_args={"verify": tls, "ssl": tls},  # httpx calls it verify, aiohttp ssl
    )


def create_llm(settings: Settings, system_instruction: str) -> LLMService:
    """Gemini, or with LLM_PROVIDER=openai Pipecat's OpenAI service on OPENAI_BASE_URL; the tools
    and the context are the same for both (Pipecat adapts them to each API)."""
    if settings.llm_provider == "openai":
        from pipecat.services.openai.llm import OpenAILLMService  # only when used: its import costs 0.4 s

        return OpenAILLMService(
            api_key=openai_api_key(settings),
            base_url=settings.openai_base_url,
            settings=OpenAILLMService.Settings(model=settings.openai_model, system_instruction=system_instruction),
        )
    return GoogleLLMService(
        api_key=settings.secret("google_api_key") or "",
        http_options=google_http_options(settings),
        settings=GoogleLLMService.Settings(
            model=settings.google_model, system_instruction=system_instruction
        ),
    )


def openai_api_key(settings: Settings) -> str:
    """The key for the OpenAI-compatible endpoint; a self-hosted one may take none, but the SDK
    insists on one."""
    return settings.secret("openai_api_key") or "not-needed"


def create_tts(settings: Settings) -> CartesiaTTSService:
    return CartesiaTTSService(
        api_key=settings.secret("cartesia_api_key") or "",
        url=settings.cartesia_url,
        sample_rate=SAMPLE_RATE,
        settings=CartesiaTTSService.Settings(
            voice=settings.cartesia_voice, model=settings.cartesia_model
        ),
    )


def create_turn_strategies(settings: Settings) -> UserTurnStrategies:
    speculate = settings.speculative_replies  # the LLM starts at VAD stop, while the turn's end is decided
    if settings.turn_stop == "speech_timeout":
        strategy = SpeculativeSpeechTimeoutStopStrategy if speculate else SpeechTimeoutUserTurnStopStrategy
        stop = strategy(user_speech_timeout=settings.user_speech_timeout_secs)
    else:
        strategy = SpeculativeTurnAnalyzerStopStrategy if speculate else TurnAnalyzerUserTurnStopStrategy
        stop = strategy(turn_analyzer=SharedSmartTurnAnalyzer())
    return UserTurnStrategies(stop=[stop])


def load_shared_models(settings: Settings) -> None:
    """Load the models every call shares (Silero; smart-turn unless turns end on a timeout) before
    the first call, which would otherwise wait ~0.3 s for them; the server's idle memory then
    includes them, so a call's memory is what it adds."""
    telephony_vad.shared_session()
    if settings.turn_stop == "smart_turn":
        smart_turn.load_shared_session()


def build_pipeline(
    transport: BaseTransport,
    stt: ChunkedDeepgramSTTService,
    settings: Settings,
    system_instruction: str,
    tools: ToolsSchema,
) -> CallPipeline:
    llm = create_llm(settings, system_instruction)
    tts = create_tts(settings)

    context = LLMContext(tools=tools)
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=TelephonyVADAnalyzer(sample_rate=SAMPLE_RATE),
            user_turn_strategies=create_turn_strategies(settings),
            user_idle_timeout=settings.idle_timeout_secs,
        ),
    )

    response_timer = ResponseTimer()
    pipeline = Pipeline(
        [
            transport.input(),  # Twilio media stream in
            stt,  # speech → text
            DTMFAggregator(timeout=1.5, enable_direct_mode=True),  # keys the callee presses → "DTMF: 12#" text
            user_aggregator,  # callee's turns into the context
            StopCalleeAudio(),  # nothing below needs the callee's audio
            response_timer,  # how long the callee waited for each reply
            llm,  # the LLM decides what to say, or calls a tool
            tts,  # text → speech
            transport.output(),  # Twilio media stream out
            StopBotAudio(),  # nor does anything below need the bot's
            assistant_aggregator,  # bot's turns into the context
        ]
    )
    return CallPipeline(pipeline, context, llm, user_aggregator, assistant_aggregator, response_timer)
