"""Business-hours clock: add business seconds, measure business time; DST-correct, holidays."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# Guards against a calendar with no open hour in reach (definitions validation prevents it).
_MAX_DAYS = 3 * 366
_ONE_DAY = timedelta(days=1)


class BusinessCalendar:
    """A team's weekly business hours in its time zone, minus public holidays.

    Hours are local wall-clock times (09:00–17:00 stays 09:00–17:00 across DST); durations are
    real elapsed seconds. All inputs and outputs are tz-aware; outputs are UTC. Immutable.
    """

    __slots__ = ("tz_name", "_tz", "_weekly", "holidays", "_cache")

    def __init__(
        self,
        tz: str,
        weekly_hours: Mapping[int, tuple[tuple[time, time], ...]],
        holidays: frozenset[date] = frozenset(),
    ) -> None:
        self.tz_name = tz
        self._tz = ZoneInfo(tz)
        self._weekly = {day: tuple(sorted(spans)) for day, spans in weekly_hours.items()}
        self.holidays = holidays
        self._cache: dict[date, tuple[tuple[datetime, datetime], ...]] = {}

    @property
    def tz(self) -> ZoneInfo:
        """The calendar's time zone."""
        return self._tz

    def __repr__(self) -> str:
        return f"BusinessCalendar({self.tz_name!r})"

    def intervals_on(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """Open intervals (UTC) of a local calendar day; empty on weekends and holidays."""
        cached = self._cache.get(day)
        if cached is not None:
            return cached
        spans: tuple[tuple[datetime, datetime], ...] = ()
        if day not in self.holidays:
            spans = tuple(
                (
                    datetime.combine(day, opens, self._tz).astimezone(UTC),
                    datetime.combine(day, closes, self._tz).astimezone(UTC),
                )
                for opens, closes in self._weekly.get(day.weekday(), ())
            )
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[day] = spans
        return spans

    def _intervals_from(self, at: datetime) -> Iterator[tuple[datetime, datetime]]:
        day = at.astimezone(self._tz).date() - _ONE_DAY
        for _ in range(_MAX_DAYS):
            yield from self.intervals_on(day)
            day += _ONE_DAY
        raise ValueError(f"calendar {self.tz_name} has no business hours within {_MAX_DAYS} days")

    def add(self, start: datetime, seconds: int) -> datetime:
        """The instant `seconds` business seconds after `start` (a start outside hours counts
        from the next opening, so `add(t, 0)` is the next opening when t is outside hours)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        remaining = timedelta(seconds=seconds)
        for opens, closes in self._intervals_from(start):
            if closes < start:
                continue
            begin = max(opens, start)
            available = closes - begin
            if remaining <= available:
                return (begin + remaining).astimezone(UTC)
            remaining -= available
        raise AssertionError("unreachable")

    def next_open(self, at: datetime) -> datetime:
        """`at` itself when inside business hours, else the next opening."""
        return self.add(at, 0)

    def business_seconds(self, start: datetime, end: datetime) -> int:
        """Business seconds between two instants (0 when end ≤ start)."""
        if end <= start:
            return 0
        total = timedelta()
        for opens, closes in self._intervals_from(start):
            if opens >= end:
                break
            if closes <= start:
                continue
            total += min(closes, end) - max(opens, start)
        return int(total.total_seconds())

    def is_open(self, at: datetime) -> bool:
        """True when `at` falls inside business hours (boundaries included)."""
        local_day = at.astimezone(self._tz).date()
        return any(o <= at <= c for o, c in self.intervals_on(local_day))
