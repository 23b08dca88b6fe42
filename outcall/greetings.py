"""Greetings synthesised while the phone rings, so the callee hears the bot the moment they answer.

Without this, the first words wait for the bot's pipeline to start: the speech-to-text and
text-to-speech connections to open (a TLS handshake each), then the greeting's synthesis.
With it, the server asks Cartesia's REST API for the rendered greeting as soon as the call is
placed, as 8 kHz μ-law (Twilio's own format), and the bot sends it the moment the media stream
starts. Audio is kept in memory by text, voice and model, so a greeting without placeholders
is synthesised once.
"""

import asyncio
from collections import OrderedDict

import aiohttp
from loguru import logger

from outcall.calls import CallConfig
from outcall.settings import Settings

CARTESIA_VERSION = "2025-04-16"
SAMPLE_RATE = 8000
CLAIM_WAIT_SECS = 0.5  # a synthesis still running when the callee answers is worth this wait


class GreetingAudio:
    """Synthesised greetings (8 kHz μ-law) in memory, at most `max_bytes` of them."""

    def __init__(self, settings: Settings, max_bytes: int):
        self.settings = settings
        self.max_bytes = max_bytes
        self._audio: OrderedDict[tuple, bytes] = OrderedDict()
        self._pending: dict[tuple, asyncio.Task] = {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 and bool(self.settings.secret("cartesia_api_key"))

    def _key(self, text: str) -> tuple:
        return (text, self.settings.cartesia_voice, self.settings.cartesia_model)

    def prepare(self, config: CallConfig) -> None:
        """Start synthesising the call's greeting, unless it is cached, on its way, or not spoken first."""
        if not self.enabled or config.wait_for_callee or not config.greeting:
            return
        key = self._key(config.greeting)
        if key in self._audio or key in self._pending:
            return
        task = asyncio.create_task(self._synthesise(key))
        self._pending[key] = task
        task.add_done_callback(lambda _: self._pending.pop(key, None))

    async def get(self, greeting: str) -> bytes | None:
        """The greeting's audio if it is ready (or becomes ready within a moment), else None."""
        key = self._key(greeting)
        if key in self._pending:
            await asyncio.wait([self._pending[key]], timeout=CLAIM_WAIT_SECS)
        audio = self._audio.get(key)
        if audio is not None:
            self._audio.move_to_end(key)
        return audio

    async def close(self) -> None:
        for task in list(self._pending.values()):
            task.cancel()
        if self._session:
            await self._session.close()

    async def _synthesise(self, key: tuple) -> None:
        text, voice, model = key
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        body = {
            "model_id": model,
            "transcript": text,
            "voice": {"mode": "id", "id": voice},
            "output_format": {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": SAMPLE_RATE},
        }
        headers = {"X-API-Key": self.settings.secret("cartesia_api_key") or "", "Cartesia-Version": CARTESIA_VERSION}
        try:
            async with self._session.post(f"{self.settings.cartesia_api_url}/tts/bytes", json=body, headers=headers) as response:
                if response.status != 200:
                    logger.warning(f"Greeting not synthesised ahead (Cartesia HTTP {response.status}): the bot will say it live")
                    return
                audio = await response.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            logger.warning(f"Greeting not synthesised ahead ({type(e).__name__}): the bot will say it live")
            return
        self._audio[key] = audio
        while sum(len(a) for a in self._audio.values()) > self.max_bytes and len(self._audio) > 1:
            self._audio.popitem(last=False)
