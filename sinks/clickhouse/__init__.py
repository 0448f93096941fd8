"""ClickHouse: migrations, table names, the batching writer."""
