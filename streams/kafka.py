"""Small confluent-kafka helpers shared by the CLI bridges, the demo and the tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator

from confluent_kafka import Consumer, KafkaError, Message, Producer

from backout.contracts import Record, encode
from backout.errors import BrokerError
from backout.settings import KafkaSettings


def producer(settings: KafkaSettings) -> Producer:
    return Producer(settings.confluent(**{"linger.ms": 5, "enable.idempotence": False}))


def publish(prod: Producer, topic: str, records: Iterable[Record], key_field: str = "service") -> int:
    """Produce records keyed by ``key_field``; return how many were sent (call ``flush`` after)."""
    sent = 0
    for record in records:
        key = getattr(record, key_field, None)
        while True:
            try:
                prod.produce(topic, encode(record), key=key.encode() if key else None)
                break
            except BufferError:  # local queue full: let it drain
                prod.poll(0.1)
        prod.poll(0)
        sent += 1
    return sent


def flush(prod: Producer, timeout_s: float = 30.0) -> None:
    if prod.flush(timeout_s) > 0:
        raise BrokerError(f"records still unsent after {timeout_s:.0f} s; is the broker up?")


def consumer(settings: KafkaSettings, topics: list[str], group: str | None = None,
             from_beginning: bool = True) -> Consumer:
    conf = settings.confluent(**{
        "group.id": group or f"backout-reader-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": group is not None,
        "session.timeout.ms": 6000,
    })
    cons = Consumer(conf)
    cons.subscribe(topics)
    return cons


def messages(cons: Consumer, timeout_s: float, idle_s: float | None = None) -> Iterator[Message]:
    """Yield messages until ``timeout_s`` passes, or ``idle_s`` passes with none after the first."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        if idle_s is not None and last is not None and time.monotonic() - last > idle_s:
            return
        msg = cons.poll(0.2)
        if msg is None:
            continue
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                continue
            raise BrokerError(f"consume failed: {error}")
        last = time.monotonic()
        yield msg
