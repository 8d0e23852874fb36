"""Stand-ins for confluent-kafka behind the runtime's seam (:class:`streams.runtime.keyed.Clients`):
what a test needs to drive the keyed-state runtime by hand, without a broker."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, TopicPartition
from pydantic import ValidationError


class FakeProducer:
    """Records what is produced; delivery reports wait until :meth:`deliver` (or every ``poll``
    when ``auto``), optionally with errors."""

    def __init__(self, auto: bool = False, room: int = 1_000_000) -> None:
        self.auto = auto
        self.room = room
        self.sent: list[tuple[str, bytes | None, bytes | None, int]] = []
        self._reports: list[tuple[Any, int]] = []
        self.errors: list[int | None] = []  # the outcome of the next deliveries, in order (None: delivered)

    def produce(self, topic, value=None, key=None, partition=-1, on_delivery=None, timestamp=0) -> None:
        if len(self._reports) >= self.room:
            raise BufferError("Local: Queue full")
        self.sent.append((topic, value, key, partition))
        self._reports.append((on_delivery, 3 if partition < 0 else partition))

    def poll(self, timeout: float = 0) -> int:
        return self.deliver() if self.auto else 0

    def deliver(self) -> int:
        reports, self._reports = self._reports, []
        for callback, partition in reports:
            code = self.errors.pop(0) if self.errors else None
            callback(None if code is None else KafkaError(code), Delivered(partition))
        return len(reports)

    def to(self, topic: str) -> list[tuple[bytes | None, bytes | None, int]]:
        return [(v, k, p) for t, v, k, p in self.sent if t == topic]


class Delivered:
    def __init__(self, partition: int) -> None:
        self._partition = partition

    def partition(self) -> int:
        return self._partition


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None, key: bytes | None = None,
                 timestamp_ms: int = 1_000) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._value, self._key, self._timestamp_ms = value, key, timestamp_ms

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return 1, self._timestamp_ms


class FakeConsumer:
    """Records commits; the test assigns, revokes or loses partitions through the group callbacks."""

    def __init__(self) -> None:
        self.commits: list[dict[int, int]] = []
        self.high: dict[int, int] = {}
        self.callbacks: dict[str, Any] = {}

    def subscribe(self, topics, on_assign, on_revoke, on_lost) -> None:
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def assign(self, topic: str, partitions: list[int]) -> None:
        self.callbacks["assign"](self, [TopicPartition(topic, p) for p in partitions])

    def revoke(self, topic: str, partitions: list[int]) -> None:
        self.callbacks["revoke"](self, [TopicPartition(topic, p) for p in partitions])

    def lose(self, topic: str, partitions: list[int]) -> None:
        self.callbacks["lost"](self, [TopicPartition(topic, p) for p in partitions])

    def commit(self, offsets, asynchronous=True) -> None:
        self.commits.append({tp.partition: tp.offset for tp in offsets})

    def get_watermark_offsets(self, tp, cached=False, timeout=None) -> tuple[int, int]:
        return 0, self.high.get(tp.partition, -1)

    def committed(self, tps, timeout=None) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in tps]

    def close(self) -> None:
        pass


class FakeClients:
    """The runtime's seam, answered in memory; ``changelog`` holds what a restore reads back."""

    def __init__(self, auto: bool = False) -> None:
        self.producer_ = FakeProducer(auto=auto)
        self.consumer_ = FakeConsumer()
        self.changelog_records: list[tuple[int, bytes, bytes]] = []

    def consumer(self, **conf: Any) -> FakeConsumer:
        return self.consumer_

    def producer(self, **conf: Any) -> FakeProducer:
        return self.producer_

    def changelog(self, name: str, partitions: int) -> None:
        pass

    def restore(self, name: str, partitions: list[int]):
        return [r for r in self.changelog_records if r[0] in partitions]


def unchecked(model: Any, **fields: Any) -> Any:
    """``model(**fields)``; or, when the contract refuses them, the same record built without
    validation: what an executor must still refuse on its own (defence in depth), since code can
    build a record that no topic would deliver."""
    try:
        return model(**fields)
    except ValidationError:
        return model.model_construct(**fields)
