"""The packaged calendars against the `holidays` library itself, and the source's refusals."""

from __future__ import annotations

from datetime import UTC, date, datetime

import holidays
import pytest

from streams.core.errors import UnknownHolidayRegion
from streams.definitions_file import PUBLIC_HOLIDAYS, load_definitions

DEFS = load_definitions()
YEARS = range(2025, 2031)
NY_WORKED = {"Lincoln's Birthday", "Susan B. Anthony Day", "Election Day"}


def _expected_berlin(year: int) -> set[date]:
    library = holidays.country_holidays("DE", subdiv="BE", years=year)
    return set(library) | {date(year, 12, 24), date(year, 12, 31)}


def _expected_new_york(year: int) -> set[date]:
    library = holidays.country_holidays("US", subdiv="NY", years=year)
    return {day for day in library if not NY_WORKED.issuperset(library.get_list(day))}


@pytest.mark.parametrize("year", YEARS)
def test_default_calendars_close_the_library_holidays_of_every_year(year: int) -> None:
    assert DEFS.teams["emea"].calendar.holidays.in_year(year) == _expected_berlin(year)
    assert DEFS.teams["amer"].calendar.holidays.in_year(year) == _expected_new_york(year)


def test_the_days_the_hand_typed_lists_missed_are_closed_now() -> None:
    berlin = DEFS.teams["emea"].calendar
    for day in (date(2025, 3, 8), date(2025, 5, 8), date(2026, 3, 8), date(2027, 3, 8)):
        assert day in berlin.holidays
    monday = date(2027, 3, 8)  # International Women's Day, a Berlin holiday on a Monday
    assert berlin.intervals_on(monday) == ()
    # beyond the old lists' end (2027-12-31): still holidays, and deadlines skip them
    assert date(2030, 12, 25) in berlin.holidays
    friday_before_easter = datetime(2029, 3, 29, 15, 0, tzinfo=UTC)  # Thursday 17:00 CEST
    due = berlin.add(friday_before_easter, 3600)  # Good Friday and Easter Monday are closed
    assert due.astimezone(berlin.tz).date() == date(2029, 4, 3)


def test_new_york_works_the_state_government_days_and_closes_the_federal_ones() -> None:
    ny = DEFS.teams["amer"].calendar
    assert date(2026, 11, 3) not in ny.holidays  # Election Day
    assert date(2026, 2, 12) not in ny.holidays  # Lincoln's Birthday
    assert date(2026, 11, 26) in ny.holidays  # Thanksgiving
    assert date(2027, 2, 15) in ny.holidays  # Washington's Birthday (and Susan B. Anthony Day)


@pytest.mark.parametrize(
    ("country", "subdivision", "categories", "key"),
    [
        ("XX", None, None, "country"),
        ("DE", "ZZ", None, "subdivision"),
        ("US", "NY", ("pagan",), "categories"),
    ],
)
def test_an_unknown_region_names_the_key(
    country: str, subdivision: str | None, categories: tuple[str, ...] | None, key: str
) -> None:
    with pytest.raises(UnknownHolidayRegion) as err:
        PUBLIC_HOLIDAYS.lookup(country, subdivision, categories)
    assert err.value.key == key


def test_a_lookup_answers_any_year() -> None:
    berlin = PUBLIC_HOLIDAYS.lookup("DE", "BE", None)
    assert date(2099, 3, 8) in berlin(2099)
    assert berlin(1999)[date(1999, 12, 25)] == ("Christmas Day",)
