"""The one produce-with-retry helper, through its producer seam (no broker): back-pressure, a
transient refusal sent again, a permanent one given up and counted."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError

from streams.runtime.sender import Sender


class FakeProducer:
    """Stands in for confluent-kafka's Producer: queues delivery reports until ``poll``."""

    def __init__(self, room: int = 1_000_000, errors: list[int | None] | None = None) -> None:
        self.room = room
        self.errors = list(errors or [])  # the outcome of each produce, in order (None: delivered)
        self.sent: list[tuple[str, bytes | None, bytes | None, int]] = []
        self._reports: list = []

    def produce(self, topic, value=None, key=None, partition=-1, on_delivery=None, timestamp=0) -> None:
        if len(self._reports) >= self.room:
            raise BufferError("Local: Queue full")
        self.sent.append((topic, value, key, partition))
        code = self.errors.pop(0) if self.errors else None
        self._reports.append((on_delivery, None if code is None else KafkaError(code), Delivered(partition)))

    def poll(self, timeout: float = 0) -> int:
        reports, self._reports = self._reports, []
        for callback, error, msg in reports:
            callback(error, msg)
        return len(reports)


class Delivered:
    def __init__(self, partition: int) -> None:
        self._partition = 3 if partition < 0 else partition

    def partition(self) -> int:
        return self._partition


def test_a_full_local_queue_is_waited_for_and_counted_not_dropped():
    waits: list[int] = []
    producer = FakeProducer(room=2)
    sender = Sender(producer, on_backpressure=lambda: waits.append(1))
    for i in range(5):
        sender.send("t", b"%d" % i)
    sender.flush(5)
    assert [v for _, v, _, _ in producer.sent] == [b"0", b"1", b"2", b"3", b"4"]
    assert waits and sender.in_flight == 0


def test_a_transient_refusal_is_sent_again_later_on_the_same_partition_and_only_then_done():
    done: list[str] = []
    producer = FakeProducer(errors=[KafkaError._MSG_TIMED_OUT])
    sender = Sender(producer, resend_s=0.2)
    sender.send("backout.anomalies", b"a", b"checkout", on_done=lambda: done.append("a"))
    sender.poll()
    assert done == [] and sender.in_flight == 1 and len(producer.sent) == 1
    sender.poll()  # not yet due
    assert len(producer.sent) == 1
    time.sleep(0.25)
    sender.poll()
    sender.poll()
    assert producer.sent[1] == ("backout.anomalies", b"a", b"checkout", 3)  # where the partitioner put it
    assert done == ["a"] and sender.in_flight == 0


def test_a_permanent_refusal_is_counted_and_reported_done():
    refused: list[str] = []
    done: list[int] = []
    producer = FakeProducer(errors=[KafkaError.MSG_SIZE_TOO_LARGE])
    sender = Sender(producer, on_refused=refused.append)
    sender.send("backout.deadletter", b"x" * 10, on_done=lambda: done.append(1))
    sender.flush(5)
    assert refused == ["backout.deadletter"] and done == [1] and len(producer.sent) == 1
