"""Where results leave the pipeline: ClickHouse and webhooks."""
