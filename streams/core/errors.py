"""Errors the core raises: each names what was wrong and what to do."""

from schemas.errors import LeadflowError


class CoreError(LeadflowError):
    """Root of the domain core's errors."""


class DefinitionsError(CoreError):
    """The definitions file is invalid; the message names the key path and the problem."""


class InvalidEvent(CoreError):
    """An input event does not follow DESIGN.md §5; the message names the field."""


class IllegalTransition(CoreError):
    """An event asks for a lifecycle move the funnel does not allow from the current stage."""


class UnknownHolidayRegion(CoreError):
    """A holiday source does not know a country, subdivision, category or holiday name.

    `key` is the definitions key at fault (country, subdivision, categories or skip), so the
    loader can name its full path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
