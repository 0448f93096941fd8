"""Errors of the alert notifier: each names what was wrong and what to do."""

from schemas.errors import LeadflowError


class AlertsError(LeadflowError):
    """Root of the notifier's errors."""


class AlertsConfigError(AlertsError):
    """The definitions' `alerts:` section (or the environment it names) is invalid; the message
    names the key."""


class UnsafeEndpoint(AlertsConfigError):
    """An endpoint URL would send alerts somewhere they must not go (plain HTTP, private or
    metadata address): the message says which endpoint and how to allow it if intended."""
