"""Calling windows: the local hours, per weekday, when a contact may be called.

Times are wall-clock times in the contact's own time zone, so a window follows the contact
through daylight-saving changes. By default every day is 09:00–20:00; no window may reach
outside 08:00–21:00 (the US TCPA's calling hours) unless a campaign explicitly allows it.
"""

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, PlainSerializer, WithJsonSchema, model_validator

from outcall.request_body import RequestBody

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
EARLIEST_LEGAL = time(8, 0)
LATEST_LEGAL = time(21, 0)


def _wall_clock(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("a window's times are the contact's local wall-clock time, like 09:00, with no offset")
    return value


WallClock = Annotated[
    time,
    AfterValidator(_wall_clock),
    PlainSerializer(lambda value: value.strftime("%H:%M"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d$", "examples": ["09:00"]}),
]
"""A local time of day, written HH:MM."""


class Window(RequestBody):
    """One stretch of calling time on a day: from `start` up to (not including) `end`."""

    start: WallClock
    end: WallClock

    @model_validator(mode="after")
    def _ordered(self) -> "Window":
        if self.start >= self.end:
            raise ValueError(f"a window must start before it ends: {self.start:%H:%M} is not before {self.end:%H:%M}")
        return self


CallingWindows = dict[Weekday, list[Window]]


def default_windows() -> CallingWindows:
    return {day: [Window(start=time(9), end=time(20))] for day in WEEKDAYS}


def outside_legal_hours(windows: CallingWindows) -> list[str]:
    """The windows that reach before 08:00 or after 21:00 local time, described for an error message."""
    return [
        f"{day} {w.start:%H:%M}-{w.end:%H:%M}"
        for day, day_windows in windows.items()
        for w in day_windows
        if w.start < EARLIEST_LEGAL or w.end > LATEST_LEGAL
    ]


def _valid_zone(name: str) -> str:
    zone(name)
    return name


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; ValueError with an example if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name like America/New_York") from None


TimeZoneName = Annotated[str, AfterValidator(_valid_zone)]


def is_open(windows: CallingWindows, tz: str, at: datetime) -> bool:
    """Whether `at` falls inside a window, on the contact's local clock."""
    local = at.astimezone(zone(tz))
    day_windows = windows.get(WEEKDAYS[local.weekday()], [])
    wall = local.time().replace(tzinfo=None)
    return any(w.start <= wall < w.end for w in day_windows)


def next_opening(windows: CallingWindows, tz: str, after: datetime) -> datetime | None:
    """The first moment at or after `after` inside a window (`after` itself if open); None if
    there are no windows at all."""
    if is_open(windows, tz, after):
        return after
    tzinfo = zone(tz)
    first_day: date = after.astimezone(tzinfo).date()
    for offset in range(8):
        day = first_day + timedelta(days=offset)
        for w in sorted(windows.get(WEEKDAYS[day.weekday()], []), key=lambda w: w.start):
            # A start inside a daylight-saving gap (rare at calling hours) resolves to just after it.
            opening = datetime.combine(day, w.start, tzinfo=tzinfo).astimezone(after.tzinfo)
            if opening > after and is_open(windows, tz, opening):
                return opening
    return None
