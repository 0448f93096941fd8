"""The front door: CLI, settings and the embedded stack."""
