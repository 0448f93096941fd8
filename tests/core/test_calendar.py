"""Business calendar: properties over random instants, and DST/holiday examples."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.calendar import BusinessCalendar
from streams.definitions_file import load_definitions

DEFS = load_definitions()
CALENDARS = [team.calendar for team in DEFS.teams.values()]

instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 10, 1), timezones=st.just(UTC)
)
durations = st.integers(min_value=0, max_value=200 * 3600)
calendars = st.sampled_from(CALENDARS)


@settings(max_examples=300, deadline=None)
@given(calendars, instants, durations)
def test_deadline_never_precedes_start(
    cal: BusinessCalendar, start: datetime, seconds: int
) -> None:
    assert cal.add(start, seconds) >= start


@settings(max_examples=300, deadline=None)
@given(calendars, instants, durations, durations)
def test_adding_a_then_b_equals_adding_a_plus_b(
    cal: BusinessCalendar, start: datetime, a: int, b: int
) -> None:
    assert cal.add(cal.add(start, a), b) == cal.add(start, a + b)


@settings(max_examples=300, deadline=None)
@given(calendars, instants, durations)
def test_business_duration_inverts_add(
    cal: BusinessCalendar, start: datetime, seconds: int
) -> None:
    assert cal.business_seconds(start, cal.add(start, seconds)) == seconds


@settings(max_examples=300, deadline=None)
@given(calendars, instants, durations)
def test_results_fall_inside_hours_and_never_on_holidays(
    cal: BusinessCalendar, start: datetime, seconds: int
) -> None:
    result = cal.add(start, seconds)
    assert cal.is_open(result)
    assert result.astimezone(cal.tz).date() not in cal.holidays


def test_start_outside_hours_counts_from_next_opening() -> None:
    berlin = DEFS.teams["emea"].calendar
    friday_evening = datetime(2026, 3, 6, 18, 0, tzinfo=UTC)  # 19:00 in Berlin
    monday_open = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)  # 09:00 CET
    assert berlin.add(friday_evening, 0) == monday_open
    assert berlin.add(friday_evening, 3600) == monday_open + timedelta(hours=1)


def test_dst_spring_forward_keeps_local_opening_hours() -> None:
    berlin = DEFS.teams["emea"].calendar
    # Fri 2026-03-27 16:00 CET closes; DST starts Sun 03-29; Mon opens 09:00 CEST = 07:00 UTC.
    start = datetime(2026, 3, 27, 14, 0, tzinfo=UTC)  # 15:00 CET, one hour before closing
    assert berlin.add(start, 2 * 3600) == datetime(2026, 3, 30, 8, 0, tzinfo=UTC)


def test_new_york_dst_fall_back() -> None:
    new_york = DEFS.teams["amer"].calendar
    # Sun 2026-11-01 DST ends; Mon 11-02 opens 08:30 EST = 13:30 UTC.
    friday_evening = datetime(2026, 10, 30, 21, 30, tzinfo=UTC)  # 17:30 EDT, closed
    assert new_york.add(friday_evening, 0) == datetime(2026, 11, 2, 13, 30, tzinfo=UTC)


def test_holiday_is_skipped() -> None:
    cal = BusinessCalendar(
        "Europe/Berlin",
        {d: ((time(9), time(17)),) for d in range(5)},
        frozenset({date(2026, 12, 25)}),
    )
    christmas_eve_close = datetime(2026, 12, 24, 16, 0, tzinfo=UTC)  # 17:00 CET
    # 25th is a holiday (26th is a Saturday): next opening is Monday the 28th.
    assert cal.add(christmas_eve_close, 60) == datetime(2026, 12, 28, 8, 1, tzinfo=UTC)
    assert (
        cal.business_seconds(christmas_eve_close, datetime(2026, 12, 28, 9, 0, tzinfo=UTC)) == 3600
    )
