"""Greetings synthesised while the phone rings, so the callee hears the bot the moment they answer.

Without this, the first words wait for the bot's pipeline to start: the speech-to-text and
text-to-speech connections to open (a TLS handshake each), then the greeting's synthesis.
With it, the server asks Cartesia's REST API for the rendered greeting as soon as the call is
placed, as 8 kHz μ-law (Twilio's own format), and the bot sends it the moment the media stream
starts. Audio is kept in memory by text, voice and model, so a greeting without placeholders
is synthesised once.

The process that places a call is not always the one its stream reaches (`WORKERS > 1`,
several instances behind a balancer), so a greeting is also handed over through the database
(`greeting_audio`): marked as coming when its synthesis starts, filled when it is done, read by
the process that claims the call, and deleted after `SHARED_SECS`. A process that finds it
marked but not yet filled waits for it as briefly as for its own.
"""

import asyncio
import hashlib
from collections import OrderedDict
from datetime import timedelta

import aiohttp
from loguru import logger
from sqlalchemy import delete, select, update

from outcall.calls import CallConfig
from outcall.database import Database, insert_ignoring_duplicates, uninterrupted
from outcall.models import SynthesisedGreeting, utcnow
from outcall.settings import Settings

CARTESIA_VERSION = "2025-04-16"
SAMPLE_RATE = 8000
CLAIM_WAIT_SECS = 0.5  # a synthesis still running when the callee answers is worth this wait
SHARED_SECS = 600  # how long a greeting waits in the database for another process to claim it
POLL_SECS = 0.05


class GreetingAudio:
    """Synthesised greetings (8 kHz μ-law) in memory, at most `max_bytes` of them."""

    def __init__(self, settings: Settings, max_bytes: int, database: Database | None = None):
        self.settings = settings
        self.max_bytes = max_bytes
        self.database = database
        self._audio: OrderedDict[tuple, bytes] = OrderedDict()
        self._pending: dict[tuple, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 and bool(self.settings.secret("cartesia_api_key"))

    def _key(self, text: str, voice: str | None = None, model: str | None = None) -> tuple:
        return (text, voice or self.settings.cartesia_voice, model or self.settings.cartesia_model)

    def prepare(self, config: CallConfig) -> None:
        """Start synthesising the call's greeting, unless it is cached, on its way, or not spoken first."""
        if not self.enabled or config.wait_for_callee or not config.greeting:
            return
        key = self._key(config.greeting, config.voice, config.tts_model)
        if key in self._pending:
            return
        if key in self._audio:  # cached here: offered again, for the process the stream may reach
            if self.database is not None:
                self._spawn(self._shared_safely(self._publish(_digest(key), self._audio[key])))
            return
        self._pending[key] = asyncio.get_running_loop().create_future()  # resolved once the audio is here
        self._spawn(self._synthesise(key))

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def get(self, greeting: str, voice: str | None = None, model: str | None = None) -> bytes | None:
        """The greeting's audio (in `voice` and `model`, else the server's) if it is ready (or
        becomes ready within a moment) here or in another process, else None."""
        key = self._key(greeting, voice, model)
        if key in self._pending:
            await asyncio.wait([self._pending[key]], timeout=CLAIM_WAIT_SECS)
        audio = self._audio.get(key)
        if audio is not None:
            self._audio.move_to_end(key)
        elif self.enabled and self.database is not None:
            audio = await self._from_other_process(key)
        return audio

    async def _from_other_process(self, key: tuple) -> bytes | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLAIM_WAIT_SECS
        while True:
            shared = await self._shared(_digest(key))
            if shared is None:  # nobody is synthesising it
                return None
            if shared:
                self._remember(key, shared)
                return shared
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(POLL_SECS)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session:
            await self._session.close()

    async def _synthesise(self, key: tuple) -> None:
        """Synthesise the greeting; offer it to other processes alongside, never in its way."""
        digest = _digest(key)
        coming = self._spawn(self._shared_safely(self._publish(digest, b""))) if self.database is not None else None
        try:
            audio = await self._request_synthesis(key)
            if audio:
                self._remember(key, audio)
        finally:
            self._pending.pop(key).set_result(None)  # callers in this process go on at once
        if coming is not None:
            await coming
            await self._shared_safely(self._publish(digest, audio) if audio else self._withdraw(digest))

    async def _request_synthesis(self, key: tuple) -> bytes | None:
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
                if response.status == 200:
                    return await response.read()
                logger.warning(f"Greeting not synthesised ahead (Cartesia HTTP {response.status}): the bot will say it live")
        except (aiohttp.ClientError, TimeoutError) as e:
            logger.warning(f"Greeting not synthesised ahead ({type(e).__name__}): the bot will say it live")
        return None

    def _remember(self, key: tuple, audio: bytes) -> None:
        self._audio[key] = audio
        while sum(len(a) for a in self._audio.values()) > self.max_bytes and len(self._audio) > 1:
            self._audio.popitem(last=False)

    # --- the hand-off between processes ------------------------------------------------------

    @staticmethod
    async def _shared_safely(operation) -> None:
        """A hand-off that fails costs another process its head start, never this call."""
        try:
            await operation
        except Exception as e:
            logger.warning(f"Greeting not shared with other server processes ({type(e).__name__}: {e})")

    @uninterrupted
    async def _publish(self, digest: str, audio: bytes) -> None:
        """Offer the greeting to every process for the next `SHARED_SECS` (empty audio: it is
        coming), and forget greetings offered longer ago."""
        async with self.database.write() as session:
            row = {"key": digest, "audio": audio, "created_at": utcnow()}
            await session.execute(insert_ignoring_duplicates(session.bind.dialect.name, SynthesisedGreeting), [row])
            if audio:  # a mark never hides audio another process has already offered
                await session.execute(
                    update(SynthesisedGreeting).where(SynthesisedGreeting.key == digest).values(audio=audio, created_at=row["created_at"])
                )
            stale = utcnow() - timedelta(seconds=SHARED_SECS)
            await session.execute(delete(SynthesisedGreeting).where(SynthesisedGreeting.created_at < stale))

    @uninterrupted
    async def _withdraw(self, digest: str) -> None:
        """The synthesis failed: nobody should wait for it."""
        async with self.database.write() as session:
            await session.execute(delete(SynthesisedGreeting).where(SynthesisedGreeting.key == digest))

    @uninterrupted
    async def _shared(self, digest: str) -> bytes | None:
        """The greeting's audio from the database: None if not there, empty while still coming."""
        async with self.database.session() as session:
            return (await session.execute(select(SynthesisedGreeting.audio).where(SynthesisedGreeting.key == digest))).scalar()


def _digest(key: tuple) -> str:
    return hashlib.sha256("\x1f".join(key).encode()).hexdigest()
