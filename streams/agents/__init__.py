"""Thin Faust agents: decode, call the core, update tables, send."""
