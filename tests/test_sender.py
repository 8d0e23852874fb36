"""The one produce-with-retry helper, through its producer seam (no broker): back-pressure, a
transient refusal sent again, a permanent one given up and counted."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError

from streams.runtime.sender import Sender
from tests.fakes import FakeProducer


def test_a_full_local_queue_is_waited_for_and_counted_not_dropped():
    waits: list[int] = []
    producer = FakeProducer(auto=True, room=2)
    sender = Sender(producer, on_backpressure=lambda: waits.append(1))
    for i in range(5):
        sender.send("t", b"%d" % i)
    sender.flush(5)
    assert [v for _, v, _, _ in producer.sent] == [b"0", b"1", b"2", b"3", b"4"]
    assert waits and sender.in_flight == 0


def test_a_transient_refusal_is_sent_again_later_on_the_same_partition_and_only_then_done():
    done: list[str] = []
    producer = FakeProducer(auto=True)
    producer.errors = [KafkaError._MSG_TIMED_OUT]
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
    producer = FakeProducer(auto=True)
    producer.errors = [KafkaError.MSG_SIZE_TOO_LARGE]
    sender = Sender(producer, on_refused=refused.append)
    sender.send("backout.deadletter", b"x" * 10, on_done=lambda: done.append(1))
    sender.flush(5)
    assert refused == ["backout.deadletter"] and done == [1] and len(producer.sent) == 1
