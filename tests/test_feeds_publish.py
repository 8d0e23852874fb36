"""The feeds' publish path without a broker: the buffer's bound, dead letters, counts, delivery."""

from __future__ import annotations

import json
import threading
import time

from backout.contracts import Deploy, Metric
from streams.feeds.parsed import Parsed, Refusal
from streams.feeds.publish import Publisher
from streams.runtime.sender import Sender


class HeldProducer:
    """A producer whose broker acknowledges only when ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sent: list[tuple[str, bytes, bytes | None, int]] = []
        self._reports: list = []

    def produce(self, topic, value=None, key=None, partition=-1, on_delivery=None, timestamp=0) -> None:
        self.sent.append((topic, value, key, timestamp))
        self._reports.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        if not self.release.is_set():
            time.sleep(min(timeout, 0.01))
            return 0
        reports, self._reports = self._reports, []
        for callback in reports:
            callback(None, None)
        return len(reports)


def parsed(n: int, refusals: int = 0) -> Parsed:
    out = Parsed(records=[Metric(ts=1.7e9 + i, service="checkout", metric="requests", value=i) for i in range(n)])
    out.refusals = [Refusal(f"line {i}", "field 'ts': got 'soon', expected a number", b"{bad}")
                    for i in range(refusals)]
    return out


def wait(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_the_buffer_takes_whole_payloads_until_full_and_frees_on_delivery():
    producer = HeldProducer()
    publisher = Publisher(Sender(producer), max_buffered=10)
    try:
        assert publisher.offer(parsed(6), "http:/records")
        assert not publisher.offer(parsed(5), "http:/records")  # 6 + 5 > 10: nothing of it is taken
        assert publisher.offer(parsed(3, refusals=1), "http:/records")
        assert publisher.buffered == 10
        assert publisher.counts.value("backout_feed_dropped_total", source="http:/records", reason="buffer full") == 5
        producer.release.set()
        wait(lambda: publisher.buffered == 0)
        assert publisher.offer(parsed(5), "http:/records")
    finally:
        publisher.close()
    assert len(producer.sent) == 6 + 3 + 1 + 5
    assert publisher.counts.value("backout_feed_records_total", source="http:/records", type="metric") == 14
    assert publisher.counts.value("backout_feed_refused_total", source="http:/records") == 1
    assert publisher.counts.value("backout_feed_buffered") == 0


def test_records_go_to_their_topic_keyed_and_stamped_and_refusals_to_the_dead_letters():
    producer = HeldProducer()
    producer.release.set()
    publisher = Publisher(Sender(producer))
    done = threading.Event()
    payload = Parsed(records=[Metric(ts=1.7e9, service="cart", metric="requests", value=1.0),
                              Deploy(ts=1.7e9 + 1, service="cart", deploy_id="d-1", version="v2")],
                     refusals=[Refusal("line 3", "field 'ts': got 'soon', expected a number", b'{"ts":"soon"}')])
    payload.skip("stale marker", 4)
    assert publisher.offer(payload, "http:/records", on_done=done.set, request_id="r1")
    assert done.wait(10)
    publisher.close()
    topics_keys = [(t, k, ts) for t, _, k, ts in producer.sent]
    assert topics_keys == [("backout.metrics", b"cart", 1_700_000_000_000), ("backout.deploys", b"cart", 1_700_000_001_000),
                           ("backout.deadletter", None, topics_keys[2][2])]
    letter = json.loads(producer.sent[2][1])
    assert (letter["id"], letter["reason"], letter["value"]) == \
        ("dl-http:/records#r1--1-0", "line 3: field 'ts': got 'soon', expected a number", '{"ts":"soon"}')
    assert publisher.counts.value("backout_feed_skipped_total", source="http:/records", reason="stale marker") == 4


def test_an_empty_payload_is_done_at_once():
    publisher = Publisher(Sender(HeldProducer()))
    done = threading.Event()
    assert publisher.offer(Parsed(), "x", on_done=done.set) and done.is_set()
    publisher.close(0.1)


def test_what_the_broker_never_took_is_counted_at_shutdown():
    publisher = Publisher(Sender(HeldProducer()))
    publisher.offer(parsed(3), "x")
    publisher.close(timeout_s=0.3)
    assert publisher.counts.value("backout_feed_dropped_total", source="all", reason="unsent at shutdown") == 3
    assert not publisher.offer(parsed(1), "x")  # closed: nothing more is taken
