"""CLI command modules; each registers its commands on `leadflow.cli.app`."""
