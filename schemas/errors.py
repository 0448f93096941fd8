"""The one error root of leadflow; it lives in the lowest layer so every layer can raise it."""


class LeadflowError(Exception):
    """Root of every error leadflow raises on purpose; messages say what was wrong and what to do."""
