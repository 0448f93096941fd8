"""Schema registries: a file registry (ids from schemas/manifest.json) and a Confluent one."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from schemas.errors import LeadflowError

AVRO_DIR = Path(__file__).with_name("avro")
MANIFEST = Path(__file__).with_name("manifest.json")


class SchemaError(LeadflowError):
    """Data or a schema does not follow the Avro contract; the message says which part."""


def _full_name(schema: dict[str, Any]) -> str:
    return f"{schema['namespace']}.{schema['name']}"


@cache
def schema_files() -> dict[str, Path]:
    """Every .avsc under schemas/avro/ by full record name (current and history)."""
    return {path.name.removesuffix(".avsc"): path for path in AVRO_DIR.rglob("*.avsc")}


@cache
def raw_schema(full_name: str) -> dict[str, Any]:
    """The JSON of one schema file."""
    path = schema_files().get(full_name)
    if path is None:
        raise SchemaError(f"no schema file for {full_name} under {AVRO_DIR}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


class Registry(ABC):
    """Maps schema ids ⇄ schemas (subject = full record name)."""

    @abstractmethod
    def id_for(self, subject: str, schema: dict[str, Any]) -> int:
        """The id under which `schema` is registered for `subject` (registering it if needed)."""

    @abstractmethod
    def schema_for(self, schema_id: int) -> dict[str, Any]:
        """The raw (JSON) schema registered under `schema_id`; SchemaError if unknown."""


class FileRegistry(Registry):
    """Ids from the manifest in schemas/: stable, no network (the embedded stack's registry)."""

    def __init__(self, manifest: Path = MANIFEST) -> None:
        data = json.loads(manifest.read_text())
        self._ids: dict[str, int] = dict(data["schemas"])
        self._by_id = {schema_id: name for name, schema_id in self._ids.items()}

    def id_for(self, subject: str, schema: dict[str, Any]) -> int:
        try:
            return self._ids[subject]
        except KeyError:
            raise SchemaError(
                f"subject {subject} is not in {MANIFEST.name}; add it with a new id"
            ) from None

    def schema_for(self, schema_id: int) -> dict[str, Any]:
        name = self._by_id.get(schema_id)
        if name is None:
            raise SchemaError(f"unknown schema id {schema_id} (written by a newer producer?)")
        return raw_schema(name)

    def subjects(self) -> dict[str, int]:
        """Every subject with its id."""
        return dict(self._ids)


class ConfluentRegistry(Registry):
    """A Confluent-compatible Schema Registry through python-schema-registry-client."""

    def __init__(self, url: str, **client_kwargs: Any) -> None:
        from schema_registry.client import SchemaRegistryClient

        self._client = SchemaRegistryClient(url=url, **client_kwargs)
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}

    def id_for(self, subject: str, schema: dict[str, Any]) -> int:
        if subject not in self._ids:
            from schema_registry.client.schema import AvroSchema

            self._ids[subject] = int(self._client.register(subject, AvroSchema(schema)))
        return self._ids[subject]

    def schema_for(self, schema_id: int) -> dict[str, Any]:
        if schema_id not in self._schemas:
            found = self._client.get_by_id(schema_id)
            if found is None:
                raise SchemaError(f"unknown schema id {schema_id} in the registry")
            self._schemas[schema_id] = (
                json.loads(found.raw_schema)
                if isinstance(found.raw_schema, str)
                else dict(found.raw_schema)
            )
        return self._schemas[schema_id]


@cache
def parsed(full_name: str) -> Any:
    """A parsed (fastavro) schema, named types resolved, cached."""
    return fastavro.parse_schema(raw_schema(full_name))


def full_name_of(schema: dict[str, Any]) -> str:
    """namespace.name of a record schema."""
    return _full_name(schema)
