"""confluent-kafka helpers shared by the CLI bridges, the demo, the tools and the tests: one
way to send (:class:`~streams.runtime.sender.Sender`), one way to read a topic to its end."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from backout.contracts import Record, encode
from backout.errors import BrokerError
from backout.settings import KafkaSettings
from streams.runtime.sender import Sender


def sender(settings: KafkaSettings, **conf: object) -> Sender:
    """A :class:`Sender` over a new producer (``conf`` overrides librdkafka settings)."""
    return Sender(Producer(settings.producer(**{"linger.ms": 5, "enable.idempotence": False, **conf})))


def publish(out: Sender, topic: str, records: Iterable[Record], key_field: str = "service") -> int:
    """Send records keyed by ``key_field`` and stamped with their event time; return how many
    (call ``out.flush`` after)."""
    sent = 0
    for record in records:
        key = getattr(record, key_field, None)
        out.send(topic, encode(record), key.encode() if key else None, timestamp_ms=int(record.ts * 1000))
        out.poll()
        sent += 1
    return sent


def consumer(settings: KafkaSettings, topics: list[str], group: str | None = None,
             from_beginning: bool = True, **conf: object) -> Consumer:
    """A consumer subscribed to ``topics`` (``conf`` overrides librdkafka settings)."""
    config = settings.confluent(**{
        "group.id": group or f"backout-reader-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": group is not None,
        "session.timeout.ms": 6000,
        **conf,
    })
    cons = Consumer(config)
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


def read_to_end(settings: KafkaSettings, topic: str, partitions: Iterable[int] | None = None,
                timeout_s: float = 30.0) -> Iterator[Message]:
    """Every record of ``topic`` (or of some of its partitions) from the start until the consumer
    has caught up, at least to the end it had when called, in offset order per partition; no
    consumer group is joined or committed. A topic that does not exist reads as empty;
    :class:`BrokerError` if no record arrives for ``timeout_s`` before the end is reached.

    A partition ends at the end-of-partition event (the fetch's own high watermark), not at the
    end ListOffsets reports: the embedded tansu broker answers ListOffsets with the last
    *batch's* base offset + 1, short of the end whenever that batch held several records. That
    answer is still a floor, and says whether a partition is empty."""
    cons = Consumer(settings.confluent(**{"group.id": f"backout-reader-{uuid.uuid4().hex[:8]}",
                                          "enable.auto.commit": False, "enable.partition.eof": True,
                                          "fetch.wait.max.ms": 10}))  # no long poll: the end is what is wanted
    try:
        if partitions is None:
            meta = cons.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if meta is None or meta.error is not None:
                return
            partitions = sorted(meta.partitions)
        floors = {}
        for partition in partitions:
            low, high = cons.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            if high > low:
                floors[partition] = high
        cons.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in floors])
        deadline = time.monotonic() + timeout_s
        while floors:
            if time.monotonic() > deadline:
                raise BrokerError(f"reading {topic} {sorted(floors)} to its end: nothing for {timeout_s:.0f} s")
            for msg in cons.consume(1000, 0.1):
                deadline = time.monotonic() + timeout_s
                error = msg.error()
                partition, offset = msg.partition() or 0, msg.offset() or 0
                if error is None:
                    if partition in floors:
                        yield msg
                elif error.code() != KafkaError._PARTITION_EOF:
                    raise BrokerError(f"reading {topic}[{partition}] failed: {error}")
                elif offset >= floors.get(partition, offset + 1):
                    del floors[partition]
    finally:
        cons.close()
