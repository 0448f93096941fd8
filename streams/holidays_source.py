"""Public holidays from the `holidays` library, handed to the pure core as per-year lookups."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from functools import lru_cache

import holidays

from streams.core.calendar import PublicHolidayLookup
from streams.core.errors import UnknownHolidayRegion

# Years scanned to check that a skipped holiday name exists (a typo would skip nothing).
_NAME_YEARS = range(2020, 2041)


class LibraryHolidays:
    """The `holidays` library as the core's `PublicHolidays` source (see streams.core.calendar).

    Each lookup computes one year when first asked (about 1 ms) and the core keeps the answer.
    """

    name = f"holidays {holidays.__version__}"

    def lookup(
        self, country: str, subdivision: str | None, categories: tuple[str, ...] | None
    ) -> PublicHolidayLookup:
        """A year → {date: names} lookup; refuses an unknown region naming the key at fault."""
        _check(country, subdivision, categories)
        return _YearLookup(country, subdivision, categories)

    def holiday_names(
        self, country: str, subdivision: str | None, categories: tuple[str, ...] | None
    ) -> frozenset[str]:
        """Every holiday name the region has in 2020–2040 (to check `skip` lists)."""
        _check(country, subdivision, categories)
        return _names(country, subdivision, categories)


def _check(country: str, subdivision: str | None, categories: tuple[str, ...] | None) -> None:
    supported = holidays.list_supported_countries()
    if country not in supported:
        raise UnknownHolidayRegion(
            "country", f"unknown country {country!r}; use an ISO 3166-1 alpha-2 code such as DE"
        )
    if subdivision is not None and subdivision not in supported[country]:
        raise UnknownHolidayRegion(
            "subdivision",
            f"{country} has no subdivision {subdivision!r}; one of {supported[country]}",
        )
    if categories is not None:
        known = holidays.country_holidays(country).supported_categories
        for category in categories:
            if category not in known:
                raise UnknownHolidayRegion(
                    "categories", f"{country} has no category {category!r}; one of {list(known)}"
                )


class _YearLookup:
    """year → {date: names} of one region (a plain callable object: picklable, pure)."""

    __slots__ = ("country", "subdivision", "categories")

    def __init__(
        self, country: str, subdivision: str | None, categories: tuple[str, ...] | None
    ) -> None:
        self.country = country
        self.subdivision = subdivision
        self.categories = categories

    def __call__(self, year: int) -> Mapping[date, tuple[str, ...]]:
        return _year(self.country, self.subdivision, self.categories, year)


@lru_cache(maxsize=512)
def _year(
    country: str, subdivision: str | None, categories: tuple[str, ...] | None, year: int
) -> Mapping[date, tuple[str, ...]]:
    table = _table(country, subdivision, categories, years=year)
    return {day: tuple(table.get_list(day)) for day in table}


@lru_cache(maxsize=64)
def _names(
    country: str, subdivision: str | None, categories: tuple[str, ...] | None
) -> frozenset[str]:
    table = _table(country, subdivision, categories, years=_NAME_YEARS)
    return frozenset(name for day in table for name in table.get_list(day))


def _table(
    country: str, subdivision: str | None, categories: tuple[str, ...] | None, years: object
) -> holidays.HolidayBase:
    if categories is None:
        return holidays.country_holidays(country, subdiv=subdivision, years=years)
    return holidays.country_holidays(
        country, subdiv=subdivision, years=years, categories=categories
    )
