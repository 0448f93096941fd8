"""Business-hours clock: add business seconds, measure business time; DST-correct, holidays."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

# Guards against a calendar with no open hour in reach (definitions validation prevents it).
_MAX_DAYS = 3 * 366
_ONE_DAY = timedelta(days=1)


# A pure lookup of one region's public holidays: year → {local date: names}. Built outside the
# core (streams.holidays_source wraps the `holidays` library) and only called here.
PublicHolidayLookup = Callable[[int], Mapping[date, tuple[str, ...]]]


class PublicHolidays(Protocol):
    """Where a definitions loader gets public holidays by region (streams.holidays_source).

    Both methods raise streams.core.errors.UnknownHolidayRegion for a region, category or
    name the source does not know. `name` (source and version) joins the definitions version.
    """

    @property
    def name(self) -> str: ...

    def lookup(
        self, country: str, subdivision: str | None, categories: tuple[str, ...] | None
    ) -> PublicHolidayLookup: ...

    def holiday_names(
        self, country: str, subdivision: str | None, categories: tuple[str, ...] | None
    ) -> frozenset[str]: ...


class ClosedDays:
    """The local dates a calendar is closed, for any year.

    A date is closed when it is in `added`, or a public holiday of `public` (per year, asked
    lazily and kept) whose names are not all in `skipped` — unless it is in `removed`.
    `added`/`removed` hold one-off dates; `added_yearly`/`removed_yearly` hold (month, day)
    pairs that recur every year (a company day off such as 24 December). Immutable once built.
    """

    __slots__ = (
        "_public",
        "added",
        "removed",
        "added_yearly",
        "removed_yearly",
        "skipped",
        "_years",
    )

    def __init__(
        self,
        public: PublicHolidayLookup | None = None,
        added: Iterable[date] = (),
        removed: Iterable[date] = (),
        added_yearly: Iterable[tuple[int, int]] = (),
        removed_yearly: Iterable[tuple[int, int]] = (),
        skipped: Iterable[str] = (),
    ) -> None:
        self._public = public
        self.added = frozenset(added)
        self.removed = frozenset(removed)
        self.added_yearly = frozenset(added_yearly)
        self.removed_yearly = frozenset(removed_yearly)
        self.skipped = frozenset(skipped)
        self._years: dict[int, frozenset[date]] = {}

    def in_year(self, year: int) -> frozenset[date]:
        """Every closed date of one calendar year."""
        closed = self._years.get(year)
        if closed is None:
            days: set[date] = set()
            if self._public is not None:
                days.update(
                    day
                    for day, names in self._public(year).items()
                    if not names or not self.skipped.issuperset(names)
                )
            days.update(_on(year, md) for md in self.added_yearly)
            days.update(day for day in self.added if day.year == year)
            days.difference_update(_on(year, md) for md in self.removed_yearly)
            days.difference_update(day for day in self.removed if day.year == year)
            closed = self._years[year] = frozenset(days)
        return closed

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and day in self.in_year(day.year)


def _on(year: int, month_day: tuple[int, int]) -> date:
    """(month, day) in `year`; 29 February falls back to the 28th in common years."""
    month, day = month_day
    if month == 2 and day == 29 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        day = 28
    return date(year, month, day)


class BusinessCalendar:
    """A team's weekly business hours in its time zone, minus its closed days (`ClosedDays`).

    Hours are local wall-clock times (09:00–17:00 stays 09:00–17:00 across DST); durations are
    real elapsed seconds. All inputs and outputs are tz-aware; outputs are UTC. Immutable.
    """

    __slots__ = ("tz_name", "_tz", "_weekly", "holidays", "_cache")

    def __init__(
        self,
        tz: str,
        weekly_hours: Mapping[int, tuple[tuple[time, time], ...]],
        holidays: ClosedDays | Iterable[date] = (),
    ) -> None:
        self.tz_name = tz
        self._tz = ZoneInfo(tz)
        self._weekly = {day: tuple(sorted(spans)) for day, spans in weekly_hours.items()}
        self.holidays = holidays if isinstance(holidays, ClosedDays) else ClosedDays(added=holidays)
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
