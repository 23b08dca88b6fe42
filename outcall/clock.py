"""Time for the dialer, injected so tests can move it: windows, retries and caps without sleeping."""

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Where the dialer reads the time: an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)
