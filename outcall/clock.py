"""Time for the dialer, the call store and reconciliation, injected so tests can move it: windows,
retries, caps and stale calls without sleeping."""

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Where the dialer reads the time: an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)
