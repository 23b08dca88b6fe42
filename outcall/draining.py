"""What SIGTERM does to a server process: stop taking new calls, let the calls in progress end.

Restarting the server is the commonest way a deploy drops calls. Uvicorn, left alone, closes
every open WebSocket at once (code 1012): the callee hears silence, nobody hangs up through
Twilio, and records keep the wrong end reason. Instead, on the first SIGTERM (or SIGINT):

1. `/dialout` answers 503 with `Retry-After`, `/health` answers 503 (a load balancer stops
   sending new work here), and the campaign dispatcher stops claiming contacts. Everything
   else keeps being served: Twilio's callbacks and the bots' reports for calls in progress.
2. Calls in progress in this process get SHUTDOWN_DRAIN_SECS to end on their own.
3. Those still talking then say a short goodbye and hang up through Twilio (end reason
   `server-shutdown`), and send their final report.
4. Once their records are final (Twilio's last callback, bounded), uvicorn's own shutdown runs.

A second signal skips the wait. Bots on Pipecat Cloud are not affected: they live elsewhere.
"""

import asyncio
import signal
from collections.abc import Awaitable, Callable

from loguru import logger

from outcall.call_store import CallStore
from outcall.dispatcher import Dispatcher

GOODBYE_SECS = 15  # a goodbye, the hang-up and the final report (its summary request included)
FINAL_STATUS_SECS = 5  # Twilio's `completed` callback after the hang-up
RETRY_AFTER_SECS = 30  # what /dialout tells clients while this process drains

EndCall = Callable[[], Awaitable[None]]


class LiveCalls:
    """The calls whose bots run in this process, each with a way to end it politely."""

    def __init__(self):
        self._ends: dict[str, EndCall] = {}
        self._changed = asyncio.Event()

    def started(self, call_id: str, end_call: EndCall) -> None:
        self._ends[call_id] = end_call

    def finished(self, call_id: str) -> None:
        self._ends.pop(call_id, None)
        self._changed.set()

    def __len__(self) -> int:
        return len(self._ends)

    def ids(self) -> list[str]:
        return list(self._ends)

    async def end_all(self) -> None:
        """Ask every live call to say goodbye and hang up."""
        for call_id, end_call in list(self._ends.items()):
            try:
                await end_call()
            except Exception:
                logger.exception(f"Could not end call {call_id} politely")

    async def wait_until_none(self, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) until no call is live; whether that happened."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._ends:
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        return True


class Drain:
    """The server's response to SIGTERM (see the module docstring). `run()` is the drain itself;
    `install()` makes the process's first SIGTERM or SIGINT run it before uvicorn shuts down."""

    def __init__(self, live_calls: LiveCalls, drain_secs: float, store: CallStore, dispatcher: Dispatcher | None):
        self.live_calls = live_calls
        self.drain_secs = drain_secs
        self.draining = False
        self.store = store
        self.dispatcher = dispatcher
        self._uvicorn_handlers: dict[int, object] = {}
        self._task: asyncio.Task | None = None
        self.before_exit: Callable[[], Awaitable[None]] | None = None  # run once drained, before uvicorn stops

    def install(self) -> None:
        """Put the drain in front of uvicorn's own signal handling (call inside uvicorn's lifespan)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._uvicorn_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, lambda sig, frame: loop.call_soon_threadsafe(self._on_signal, sig))

    def _on_signal(self, sig: int) -> None:
        if self._task is not None:  # a second signal: stop waiting
            logger.warning("Second signal: shutting down without waiting for calls")
            self._hand_over(sig)
            return
        self._task = asyncio.create_task(self._drain_then_exit(sig))

    async def _drain_then_exit(self, sig: int) -> None:
        try:
            await self.run()
            if self.before_exit:
                await self.before_exit()
        finally:
            self._hand_over(sig)

    def _hand_over(self, sig: int) -> None:
        """Let uvicorn shut down as it would have."""
        handler = self._uvicorn_handlers.get(sig)
        if callable(handler):
            handler(sig, None)

    async def run(self) -> None:
        """Stop taking calls, let those in progress end (politely, if they must), bounded."""
        self.draining = True
        logger.warning(
            f"Draining: no new calls; {len(self.live_calls)} in progress get {self.drain_secs:g} s to finish"
        )
        if self.dispatcher:
            await self.dispatcher.stop()
        ended = self.live_calls.ids()
        if not await self.live_calls.wait_until_none(self.drain_secs):
            logger.warning(f"Ending {len(self.live_calls)} calls still in progress")
            ended += [call_id for call_id in self.live_calls.ids() if call_id not in ended]
            await self.live_calls.end_all()
            if not await self.live_calls.wait_until_none(GOODBYE_SECS):
                logger.error(f"{len(self.live_calls)} calls did not end in {GOODBYE_SECS} s; stopping anyway")
        await self._wait_for_final_records(ended)
        logger.info("Drained")

    async def _wait_for_final_records(self, call_ids: list[str]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FINAL_STATUS_SECS
        for call_id in call_ids:
            while loop.time() < deadline:
                record = await self.store.get(call_id)
                if record is None or record.is_final:
                    break
                await asyncio.sleep(0.1)
