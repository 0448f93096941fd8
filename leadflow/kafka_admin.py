"""Kafka admin tooling (kafka-python): topic creation from streams/topics.py."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.errors import LeadflowError
from streams.topics import TopicSpec, topic_specs


class BrokerUnavailable(LeadflowError):
    """The Kafka broker could not be reached."""


def admin_client(bootstrap: str) -> KafkaAdminClient:
    """A connected admin client, or BrokerUnavailable with the address in the message."""
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="leadflow-admin", request_timeout_ms=10000
        )
    except (KafkaError, OSError) as exc:
        raise BrokerUnavailable(
            f"no Kafka broker answers at {bootstrap} ({exc.__class__.__name__}); "
            "start one with `leadflow stack up` or pass --bootstrap"
        ) from None


def create_topics(bootstrap: str, partitions: int, prefix: str = "") -> tuple[list[str], list[str]]:
    """Create the spec'd topics (names with `prefix`, for tests) that are missing;
    returns (created, already existing)."""
    admin = admin_client(bootstrap)
    try:
        existing = set(admin.list_topics())
        specs = [
            TopicSpec(prefix + s.name, s.partitions, s.configs) for s in topic_specs(partitions)
        ]
        missing = [s for s in specs if s.name not in existing]
        created = []
        for spec in missing:
            try:
                admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, 1, topic_configs=spec.configs)]
                )
                created.append(spec.name)
            except TopicAlreadyExistsError:
                existing.add(spec.name)
        return created, sorted(s.name for s in specs if s.name in existing)
    finally:
        admin.close()
