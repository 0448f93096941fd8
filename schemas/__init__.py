"""The contract: Avro schemas, the Confluent wire-format codec and schema registries."""
