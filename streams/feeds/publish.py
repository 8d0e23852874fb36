"""The one publish path of every feed: a bounded buffer in front of the project's Sender.

A feed hands over what it parsed (:class:`~streams.feeds.parsed.Parsed`):
records go to their input topic keyed by service and stamped with their
event time, each refusal to ``backout.deadletter`` with its reason. One
thread owns the producer (:class:`~streams.runtime.sender.Sender`), so a
caller never blocks on the broker:

* **bounded buffer** — at most ``max_buffered`` records (default 100,000,
  about 30 MB) are accepted and not yet on the broker. :meth:`Publisher.offer`
  takes a whole payload or nothing: when it does not fit, it returns ``False``
  and the caller tells its sender to come back (HTTP 503 + ``Retry-After``;
  Prometheus and the OpenTelemetry exporters retry 5xx), or, for a source that
  cannot wait (:mod:`backout.exporter`), drops it — counted either way;
* **retry with backoff while the broker is away** — librdkafka retries inside
  ``message.timeout.ms`` and the Sender sends a refused record again after
  ``resend_s``, for as long as it takes; records stay in the buffer until the
  broker has them, so an outage shorter than the buffer lasts loses nothing;
* **batching** — the thread drains the buffer in batches and librdkafka groups
  them per partition (``linger.ms``);
* **counts** — every record accepted, refused (dead-lettered), skipped and
  dropped is counted by source and reason (:class:`FeedCounts`, exposed on the
  receiver's ``/metrics``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from backout.contracts import dead_letter, encode
from backout.settings import KafkaSettings
from streams import topics
from streams.feeds.parsed import Parsed
from streams.replay import INPUT_TOPICS
from streams.runtime.sender import Sender

log = logging.getLogger("backout.feeds")
MAX_BUFFERED = 100_000
BATCH = 1_000


class FeedCounts:
    """What the feeds did, by source: Prometheus counters in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.records = Counter("backout_feed_records", "Records accepted for publishing, by source and type",
                               ["source", "type"], registry=self.registry)
        self.refused = Counter("backout_feed_refused", "Items refused and dead-lettered, by source",
                               ["source"], registry=self.registry)
        self.skipped = Counter("backout_feed_skipped", "Items deliberately not turned into records, by reason",
                               ["source", "reason"], registry=self.registry)
        self.dropped = Counter("backout_feed_dropped", "Records not published, by reason",
                               ["source", "reason"], registry=self.registry)
        self.buffered = Gauge("backout_feed_buffered", "Records accepted and not yet on the broker",
                              registry=self.registry)
        self.delivered = Counter("backout_feed_delivered", "Records the broker acknowledged",
                                 registry=self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's value, 0 if it was never counted (for tests and the bench)."""
        return self.registry.get_sample_value(name, labels) or 0.0


class Publisher:
    """Publishes parsed payloads through one :class:`Sender` on a thread of its own."""

    def __init__(self, sender: Sender, max_buffered: int = MAX_BUFFERED, counts: FeedCounts | None = None) -> None:
        if max_buffered < 1:
            raise ValueError(f"max_buffered must be at least 1, got {max_buffered}")
        self.sender = sender
        self.max_buffered = max_buffered
        self.counts = counts or FeedCounts()
        sender.on_refused = self._refused_for_good
        self._buffered = 0
        self.counts.buffered.set_function(lambda: self._buffered)
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[str, bytes, bytes | None, int, Callable[[], None]]] = \
            queue.SimpleQueue()
        self._stop = threading.Event()
        self._own_producer: Any = None  # the producer :meth:`connect` made, closed with the publisher
        self._thread = threading.Thread(target=self._run, name="backout-feed-publisher", daemon=True)
        self._thread.start()

    @classmethod
    def connect(cls, settings: KafkaSettings, max_buffered: int = MAX_BUFFERED,
                counts: FeedCounts | None = None) -> Publisher:
        """A publisher with its own producer, whose local queue holds the whole buffer."""
        from confluent_kafka import Producer

        producer = Producer(settings.producer(**{
            "linger.ms": 20, "enable.idempotence": False,
            "queue.buffering.max.messages": max_buffered + BATCH,
        }))
        publisher = cls(Sender(producer), max_buffered, counts)
        publisher._own_producer = producer
        return publisher

    @property
    def buffered(self) -> int:
        return self._buffered

    def offer(self, parsed: Parsed, source: str, on_done: Callable[[], None] | None = None,
              request_id: str | None = None) -> bool:
        """Take every record and refusal of ``parsed``, or none of them if they do not fit.

        Returns whether they were taken; ``on_done`` runs (on the publisher's
        thread) once the broker has them all. Skips are counted either way.
        """
        for reason, times in parsed.skipped.items():
            self.counts.skipped.labels(source, reason).inc(times)
        size = len(parsed.records) + len(parsed.refusals)
        with self._lock:
            if self._stop.is_set() or (size and self._buffered + size > self.max_buffered):
                self.counts.dropped.labels(source, "buffer full").inc(size)
                return False
            self._buffered += size
        remaining = [size]

        def delivered() -> None:
            with self._lock:
                self._buffered -= 1
                remaining[0] -= 1
                last = remaining[0] == 0
            self.counts.delivered.inc()
            if last and on_done is not None:
                on_done()

        kinds = Tally(record.type for record in parsed.records)
        for kind, times in kinds.items():
            self.counts.records.labels(source, kind).inc(times)
        for record in parsed.records:
            self._queue.put((INPUT_TOPICS[record.type], encode(record), record.service.encode(),
                             int(record.ts * 1000), delivered))
        request_id = request_id or uuid.uuid4().hex[:12]
        now = time.time()
        for number, refusal in enumerate(parsed.refusals):
            self.counts.refused.labels(source).inc()
            letter = dead_letter(refusal.raw, str(refusal), f"{source}#{request_id}", -1, number, now)
            self._queue.put((topics.DEADLETTER, encode(letter), None, int(now * 1000), delivered))
        if size == 0 and on_done is not None:
            on_done()
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking payloads and wait up to ``timeout_s`` for the buffer to reach the broker;
        what is still buffered then is counted as dropped."""
        self._stop.set()
        self._thread.join(timeout_s)
        if self._buffered:
            log.error("%d buffered records not published: the broker did not take them in %.0f s",
                      self._buffered, timeout_s)
            self.counts.dropped.labels("all", "unsent at shutdown").inc(self._buffered)
        if self._own_producer is not None and not self._thread.is_alive():  # its connections end now,
            # not whenever it is collected (a thread still sending keeps it)
            self._own_producer.close()
            self._own_producer = None

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty() and self.sender.in_flight == 0):
            batch: list[Any] = []
            try:
                batch.append(self._queue.get(timeout=0.05))
                while len(batch) < BATCH:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            for topic, value, key, timestamp_ms, done in batch:
                self.sender.send(topic, value, key, on_done=done, timestamp_ms=timestamp_ms)
            self.sender.poll(0 if batch else 0.05)

    def _refused_for_good(self, topic: str) -> None:
        self.counts.dropped.labels(topic, "refused by the broker for good").inc()
