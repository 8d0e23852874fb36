"""Shared fixtures. ``broker`` is a real Kafka-protocol broker for the whole session:

1. ``KAFKA_BOOTSTRAP_SERVERS`` if set (a cluster you run, or CI's);
2. else a testcontainers Kafka when a Docker engine answers;
3. else the embedded tansu broker on a free port.

It never skips: integration tests always run against a real broker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from backout.settings import KafkaSettings
from streams.broker import EmbeddedBroker


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap address of a real broker."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    elif _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        with EmbeddedBroker() as embedded:
            yield embedded.bootstrap


@pytest.fixture(scope="session")
def kafka(broker: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker)


@pytest.fixture
def unique() -> str:
    """A fresh suffix for topic and group names, so tests never see each other's records."""
    return uuid.uuid4().hex[:10]
