"""Changes to call records, as events for the console's live pages.

The feed reads the database, not this process's memory, so a page shows the same thing
whichever instance or worker serves it and whichever one wrote the change. One poller per
process (while any page listens) asks for the calls changed since its last look, once a second,
using `ix_calls_updated`; every listening page gets the changes it cares about. Twenty pages
cost one query a second, not twenty.

Clocks of several instances may differ a little, so each look reaches `OVERLAP` back and
changes already sent are recognised by their (call, updated_at) pair. An event's id is the
change's time, so a page that reconnects (`Last-Event-ID`) first gets what it missed.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from loguru import logger

from outcall.call_store import CallStore
from outcall.models import CallRecord, utcnow

POLL_SECS = 1.0
SUMMARY_SECS = 5.0  # the overview's figures are recounted at most this often, once for all pages
OVERLAP = timedelta(seconds=5)
PAGE, MAX_PAGES = 500, 20  # changed calls read per query, and queries per look
QUEUE_LIMIT = 100  # a page this far behind has stopped reading; it is dropped and reconnects


class CallFeed:
    """Polls for changed calls while pages listen, and hands each change to every listener.

    Listeners get `("calls", [CallRecord, …])` and, after changes and at most every
    `SUMMARY_SECS`, `("summary", summarise())`: figures counted once for every open page.
    `summary()` serves pages being loaded from the same count, while it is that fresh.
    """

    def __init__(self, store: CallStore, summarise: Callable[[], Awaitable[Any]], poll_secs: float = POLL_SECS):
        self.store = store
        self.summarise = summarise
        self.poll_secs = poll_secs
        self._summarised_at = float("-inf")
        self._summary: Any = None
        self._listeners: set[asyncio.Queue] = set()
        self._task: asyncio.Task | None = None
        self._sent: dict[str, datetime] = {}
        self._watermark = utcnow()

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue]:
        """A queue of (kind, data) items (None: the feed has closed, stop)."""
        queue: asyncio.Queue = asyncio.Queue(QUEUE_LIMIT)
        self._listeners.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        try:
            yield queue
        finally:
            self._listeners.discard(queue)

    async def close(self) -> None:
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._listeners.clear()
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        pending_summary = False
        while self._listeners:
            try:
                changed = await self.changes()
                if changed:
                    self._broadcast(("calls", changed))
                    pending_summary = True
                if pending_summary and loop.time() - self._summarised_at >= SUMMARY_SECS:
                    pending_summary = False
                    self._broadcast(("summary", await self.summary(max_age=0)))
            except Exception:
                logger.exception("Console feed could not read changed calls; retrying")
            await asyncio.sleep(self.poll_secs)

    async def summary(self, max_age: float = SUMMARY_SECS) -> Any:
        """The overview's figures, counted again if the last count is older than `max_age`."""
        now = asyncio.get_running_loop().time()
        if now - self._summarised_at > max_age:
            self._summary, self._summarised_at = await self.summarise(), now
        return self._summary

    def _broadcast(self, item: tuple[str, Any]) -> None:
        for queue in list(self._listeners):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:  # a page that stopped reading: it reconnects and catches up
                self._listeners.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)

    async def changes(self) -> list[CallRecord]:
        """Records changed since the last look that have not been sent yet (read a page of
        `PAGE` at a time, so a burst of changes is read through, never stuck on its first page)."""
        since, fresh = self._watermark - OVERLAP, []
        for _ in range(MAX_PAGES):
            records = await self.store.changed_since(since, limit=PAGE)
            for record in records:
                if self._sent.get(record.id) != record.updated_at:
                    self._sent[record.id] = record.updated_at
                    fresh.append(record)
            if records:
                self._watermark = max(self._watermark, records[-1].updated_at)
            if len(records) < PAGE or records[-1].updated_at == since:
                break
            since = records[-1].updated_at
        horizon = self._watermark - OVERLAP * 2
        self._sent = {call_id: at for call_id, at in self._sent.items() if at >= horizon}
        return fresh
