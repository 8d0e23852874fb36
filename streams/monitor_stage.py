"""The worker's metrics stage: samples in batches through one MetricMonitor per (service, metric).

Why not a Faust agent: Faust spends about 0.1 ms per event of its own before
any work is done (measured: ~7,000 empty events/s on this machine), and a
changelog-backed table adds a changelog produce and a store write per sample.
The detectors need about 0.03 ms. So this stage reads ``backout.metrics``
with confluent-kafka (librdkafka fetches in C, batches of hundreds) in its
own consumer group, and keeps its state the way a Faust table would, but
without a write per sample and without stopping the stream to checkpoint:

* a monitor that changed is written to the compacted changelog topic
  ``<app id>-monitors-changelog`` (same partition as its samples) about
  ``checkpoint_s`` after it first changed, a few hundred per batch, together
  with the offset of the last sample in it;
* the committed offset of a partition never passes a sample whose effects are
  not on the broker: it is the lowest of the next offset to read, the first
  unsaved sample of every changed monitor, and the sample behind every
  output or state record not yet acknowledged;
* a monitor's state is written only once its anomalies are acknowledged, so
  a state that says "alarmed" never outlives a lost anomaly;
* a worker that is given a partition reads that partition of the changelog
  first, then consumes from the committed offset, skipping a sample at or
  below the offset its monitor's state already includes: a crash loses no
  sample and counts none twice.

Anomalies and watermarks go out as soon as they happen. After a crash the
samples since the committed offset are read again and their anomalies may be
published again: downstream sees them at least once, and the decider drops
redeliveries (:meth:`detectors.decider.Decider.handle`). A record the broker
refuses is sent again a second later, unless sending again cannot help (too
large, not authorised): then it is logged and counted. A detector that raises
(a bug) is rebuilt from its last written state: the samples it took since are
lost to it, and the failing one is dead-lettered.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from backout.contracts import Metric, Record, decode, encode
from backout.errors import BackoutError, ContractError, SampleRejected
from backout.settings import KafkaSettings
from detectors.config import BackoutConfig
from detectors.monitor import MetricMonitor
from detectors.watermark import PartitionClock
from streams import topics
from streams.admin import AdminClient, create_topics, existing_topics
from streams.deadletter import envelope
from streams.telemetry import Telemetry
from streams.topics import TopicSpec

log = logging.getLogger("backout.monitor")
BATCH = 500  # samples per consume call: ~15 ms of detector work, so the decider is never held long
SAVES = 500  # monitor states written per batch at most: the same order of work
COMMIT_S = 1.0
PERMANENT = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
             KafkaError.TOPIC_AUTHORIZATION_FAILED}  # sending again cannot help
RESEND_S = 1.0  # a record the broker refused (after the producer's own retries) is sent again this much later


@dataclass
class _Partition:
    """What the stage keeps for one metrics partition it owns."""

    clock: PartitionClock
    saved: dict[bytes, bytes] = field(default_factory=dict)  # key -> its state as last written (JSON)
    monitors: dict[bytes, MetricMonitor] = field(default_factory=dict)
    applied: dict[bytes, int] = field(default_factory=dict)  # key -> offset of the last sample in its state
    dirty: dict[bytes, tuple[int, float]] = field(default_factory=dict)  # key -> (first unsaved offset, since)
    unacked: dict[int, int] = field(default_factory=dict)  # sample offset -> records in flight because of it
    unacked_by_key: dict[bytes, int] = field(default_factory=dict)  # key -> its anomalies in flight
    next_offset: int | None = None  # the next sample to read
    committed: int | None = None
    idle_at: float | None = None  # last-consumed time when it was declared idle

    def hold(self, offset: int, key: bytes | None = None) -> None:
        self.unacked[offset] = self.unacked.get(offset, 0) + 1
        if key is not None:
            self.unacked_by_key[key] = self.unacked_by_key.get(key, 0) + 1

    def release(self, offset: int, key: bytes | None = None) -> None:
        _decrement(self.unacked, offset)
        if key is not None:
            _decrement(self.unacked_by_key, key)

    def committable(self) -> int | None:
        """The lowest offset whose sample may still have to be read again after a crash."""
        if self.next_offset is None:
            return None
        return min([self.next_offset, *(first for first, _ in self.dirty.values()), *self.unacked])


class _Unsent:
    """What a delivery callback needs of a record that never left: its topic."""

    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


def _decrement(counts: dict, key: object) -> None:
    if counts.get(key, 0) > 1:
        counts[key] -= 1
    else:
        counts.pop(key, None)


class MonitorStage:
    """Consumes ``backout.metrics``; publishes anomalies, watermarks and dead letters."""

    def __init__(self, app_id: str, partitions: int, kafka: KafkaSettings, config: BackoutConfig,
                 telemetry: Telemetry, checkpoint_s: float = 5.0, idle_after_s: float = 10.0) -> None:
        self.kafka = kafka
        self.config = config
        self.telemetry = telemetry
        self.partitions = partitions
        self.checkpoint_s = checkpoint_s
        self.idle_after_s = idle_after_s
        self.changelog = f"{app_id}-monitors-changelog"
        self.group = f"{app_id}-monitor"
        self._owned: dict[int, _Partition] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resend: list[tuple[float, Message, Callable[..., None]]] = []  # refused: (when to retry, ...)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self.on_failure: Callable[[BaseException], None] = lambda exc: None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="backout-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Checkpoint, leave the group and stop (a clean shutdown replays nothing)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def assigned(self) -> list[int]:
        return sorted(self._owned)

    def _run(self) -> None:
        try:
            self._create_changelog()
            self._producer = Producer(self.kafka.confluent(**{
                "linger.ms": 5, "enable.idempotence": True, "batch.size": 1 << 19,
                "queue.buffering.max.messages": 500_000}))
            self._consumer = Consumer(self.kafka.confluent(**{
                "group.id": self.group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, "fetch.wait.max.ms": 50,
                "enable.partition.eof": False}))
            self._consumer.subscribe([topics.METRICS], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                     on_lost=self._on_lost)
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported to the app, which stops the worker
            log.exception("the metrics stage failed")
            self.on_failure(exc)
        finally:
            self._close()

    def _loop(self) -> None:
        assert self._consumer is not None and self._producer is not None
        next_commit = time.monotonic() + COMMIT_S
        next_idle_check = time.monotonic() + 1.0
        while not self._stop.is_set():
            batch = self._consumer.consume(BATCH, 0.05)
            if batch:
                self._take(batch)
            self._producer.poll(0)
            now = time.monotonic()
            self._send_again(now)
            self._save_changed(now - self.checkpoint_s)
            if now >= next_commit:
                self._commit(list(self._owned), asynchronous=True)
                next_commit = now + COMMIT_S
            if now >= next_idle_check:
                self._declare_idle(now)
                next_idle_check = now + 1.0

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._checkpoint(list(self._owned))
                self._consumer.close()  # leaves the group: the partitions move at once
            except (KafkaException, BackoutError) as exc:
                log.warning("final checkpoint failed (%s); the next owner replays from the last one", exc)
            self._consumer = None

    # -- samples -----------------------------------------------------------------------

    def _take(self, batch: list[Message]) -> None:
        assert self._consumer is not None
        counts: dict[int, int] = {}
        for msg in batch:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", error)
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            owned = self._owned.get(partition)
            if owned is None:
                continue  # revoked while this batch was in flight: its next owner reads it
            self._sample(msg, owned, partition, offset)
            owned.next_offset = offset + 1
            counts[partition] = counts.get(partition, 0) + 1
        for partition, count in counts.items():
            self.telemetry.consumed(topics.METRICS, partition, self._owned[partition].next_offset or 0, count)
            _, high = self._consumer.get_watermark_offsets(TopicPartition(topics.METRICS, partition), cached=True)
            if high is not None and high >= 0:
                self.telemetry.highwater(topics.METRICS, partition, high)

    def _sample(self, msg: Message, owned: _Partition, partition: int, offset: int) -> None:
        try:
            sample = decode(msg.value(), expect=Metric)
            spec = self.config.spec_for(sample.metric)
            if spec is None:
                raise SampleRejected(f"unknown metric {sample.metric!r}: not in the configuration")
        except (ContractError, SampleRejected) as exc:
            self._dead_letter(msg, owned, offset, str(exc))
            return
        key = f"{sample.service}\x1f{sample.metric}".encode()
        if offset <= owned.applied.get(key, -1):  # read again after a restart: its state already includes it
            self._observe(owned, sample.ts, sample.service, offset)
            return
        try:
            monitor = owned.monitors.get(key)
            kind, broker_ms = msg.timestamp()
            owned.clock.admit(sample.ts, sample.service, sample.metric,
                              new_stream=monitor is None and key not in owned.saved,
                              reference_ts=broker_ms / 1000 if kind != TIMESTAMP_NOT_AVAILABLE else None)
            if monitor is None:
                saved = owned.saved.get(key)
                monitor = (MetricMonitor(sample.service, sample.metric, spec) if saved is None
                           else MetricMonitor.from_state(json.loads(saved), spec))
                owned.monitors[key] = monitor
            anomaly = monitor.update(sample)
        except SampleRejected as exc:
            self._dead_letter(msg, owned, offset, str(exc))
            return
        except Exception as exc:  # a bug in the core must not stop the stream, nor lose the record
            log.exception("monitor failed on %s[%d]@%d", msg.topic(), partition, offset)
            owned.monitors.pop(key, None)  # it may be half-changed: rebuilt from its last written state
            owned.dirty.pop(key, None)
            self._dead_letter(msg, owned, offset, f"internal error: {exc!r}")
            return
        owned.applied[key] = offset
        if key not in owned.dirty:
            owned.dirty[key] = (offset, time.monotonic())
        if anomaly is not None:
            self.telemetry.anomaly(anomaly)
            self._send(anomaly, topics.ANOMALIES, owned, offset, key)
            self._send(anomaly, topics.DECIDER, owned, offset, key)
        self._observe(owned, sample.ts, sample.service, offset)

    def _observe(self, owned: _Partition, ts: float, service: str, offset: int) -> None:
        mark = owned.clock.observe(ts, service)
        if mark is not None:
            self._send(mark, topics.DECIDER, owned, offset)

    # -- output ------------------------------------------------------------------------

    def _send(self, record: Record, topic: str, owned: _Partition | None = None, offset: int = -1,
              key: bytes | None = None) -> None:
        """Publish an output caused by the sample at ``offset`` (none for idle marks)."""
        service = getattr(record, "service", None)
        self._produce(topic, encode(record), service.encode() if service else None, owned, offset, key)

    def _dead_letter(self, msg: Message, owned: _Partition, offset: int, reason: str) -> None:
        topic, partition = msg.topic() or "", msg.partition() or 0
        self.telemetry.dead_letter(topic, reason)
        _, broker_ms = msg.timestamp()
        self._produce(topics.DEADLETTER, envelope(msg.value(), reason, topic, partition, offset, broker_ms / 1000),
                      msg.key(), owned, offset)

    def _produce(self, topic: str, value: bytes, key: bytes | None, owned: _Partition | None = None,
                 offset: int = -1, owner: bytes | None = None, partition: int = -1) -> None:
        """Send, holding back the commit of ``offset`` until the broker has it. ``partition`` -1:
        the producer's partitioner chooses (by key, as every other producer of these topics does)."""
        if owned is not None:
            owned.hold(offset, owner)
        self._enqueue(topic, value, key, partition, partial(self._delivered, owned, offset, owner))

    def _enqueue(self, topic: str, value: bytes | None, key: bytes | None, partition: int,
                 callback: Callable[..., None]) -> None:
        assert self._producer is not None
        while True:
            try:
                self._producer.produce(topic, value, key, partition=partition, on_delivery=callback)
                return
            except BufferError:  # the local queue is full: let the broker catch up
                self._producer.poll(0.05)
            except KafkaException as exc:  # refused before sending (too large): as a permanent refusal
                callback(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, str(exc)), _Unsent(topic))
                return

    def _delivered(self, owned: _Partition | None, offset: int, owner: bytes | None,
                   error: KafkaError | None, msg: Message) -> None:
        if error is not None and error.code() in PERMANENT:
            log.error("%s refused a record for good (%s): not sent; its sample is not held back", msg.topic(), error)
            self.telemetry.refused(msg.topic() or "")
            error = None
        if error is not None:
            log.warning("%s refused a record (%s); sending it again in %.0f s", msg.topic(), error, RESEND_S)
            self._resend.append((time.monotonic() + RESEND_S, msg, partial(self._delivered, owned, offset, owner)))
        elif owned is not None:
            owned.release(offset, owner)

    def _send_again(self, now: float) -> None:
        due = [r for r in self._resend if r[0] <= now]
        if not due:
            return
        self._resend = [r for r in self._resend if r[0] > now]
        for _, msg, callback in due:
            partition = msg.partition()
            self._enqueue(msg.topic() or "", msg.value(), msg.key(), -1 if partition is None else partition, callback)

    # -- state ------------------------------------------------------------------------

    def _save_changed(self, changed_before: float, everything: bool = False) -> None:
        """Write the states that changed before ``changed_before`` (monotonic time) and whose
        anomalies are on the broker: the oldest first, ``SAVES`` at most unless ``everything``."""
        budget = SAVES
        for owned in list(self._owned.values()):
            ready: list[tuple[bytes, int]] = []
            for key, (first, since) in owned.dirty.items():
                if not everything and (since > changed_before or len(ready) >= budget):
                    break
                if not owned.unacked_by_key.get(key):  # its anomalies, or its last state, still in flight
                    ready.append((key, first))
            for key, first in ready:
                del owned.dirty[key]
                state = json.dumps(owned.monitors[key].to_state(), separators=(",", ":")).encode()
                owned.saved[key] = state
                entry = b'{"offset":%d,"state":%s}' % (owned.applied[key], state)
                # owner=key: not saved again until this write is acknowledged, so a retried older
                # state can never land after a newer one
                self._produce(self.changelog, entry, key, owned, first, owner=key, partition=owned.clock.partition)
            budget -= len(ready)

    def _commit(self, partitions: list[int], asynchronous: bool) -> None:
        assert self._consumer is not None
        offsets = []
        for partition in partitions:
            owned = self._owned[partition]
            position = owned.committable()
            if position is not None and (position != owned.committed or not asynchronous):
                offsets.append(TopicPartition(topics.METRICS, partition, position))
                owned.committed = position
        if offsets and asynchronous:
            self._consumer.commit(offsets=offsets, asynchronous=True)  # a failure: the next one covers it
        elif offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)

    def _checkpoint(self, partitions: list[int]) -> None:
        """Before partitions are given away, or at shutdown: everything on the broker, then commit."""
        assert self._producer is not None
        self._flush()  # outputs first: a state must not say "alarmed" before its anomaly is out
        self._save_changed(time.monotonic(), everything=True)
        self._flush()
        self._commit(partitions, asynchronous=False)

    def _flush(self) -> None:
        """Wait until everything produced is on the broker (through outages); give up only when stopping."""
        assert self._producer is not None
        give_up = time.monotonic() + 10.0
        while True:
            unsent = self._producer.flush(1.0)
            if not unsent and not self._resend:
                return
            if not unsent:
                time.sleep(0.1)  # only refused records left, waiting for their retry
            self._send_again(time.monotonic())
            if self._stop.is_set() and time.monotonic() > give_up:
                raise BackoutError("records still unsent at shutdown")

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        config = self.config
        owned = {tp.partition: _Partition(PartitionClock(tp.partition, config.watermark_interval_s, self.partitions,
                                                         config.max_future_skew_s, config.max_lateness_s))
                 for tp in partitions}
        self._restore(owned)
        self._owned.update(owned)
        log.info("metrics partitions now %s", self.assigned())

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = [tp.partition for tp in partitions if tp.partition in self._owned]
        try:
            self._checkpoint(mine)
        finally:
            for partition in mine:
                del self._owned[partition]
                self.telemetry.released(topics.METRICS, partition)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Out of the group (session timed out): another worker may own them already; it must not
        see commits from here. Their next owner replays from the last commit."""
        for tp in partitions:
            if self._owned.pop(tp.partition, None) is not None:
                self.telemetry.released(topics.METRICS, tp.partition)
        log.warning("lost metrics partitions %s; now %s", sorted(tp.partition for tp in partitions), self.assigned())

    def _restore(self, owned: dict[int, _Partition], timeout_s: float = 120.0) -> None:
        """Read the changelog of these partitions to its end: the last state of each key wins."""
        reader = Consumer(self.kafka.confluent(**{"group.id": f"{self.group}-restore", "enable.auto.commit": False,
                                                 "enable.partition.eof": True}))
        try:
            ends = {}
            for partition in owned:
                low, high = reader.get_watermark_offsets(TopicPartition(self.changelog, partition), timeout=30)
                if high > low:
                    ends[partition] = high
            reader.assign([TopicPartition(self.changelog, p, OFFSET_BEGINNING) for p in ends])
            deadline = time.monotonic() + timeout_s
            while ends:
                if time.monotonic() > deadline:
                    raise BackoutError(f"restoring {self.changelog} {sorted(ends)} took over {timeout_s:.0f} s")
                for msg in reader.consume(1000, 0.5):
                    partition, offset = msg.partition() or 0, msg.offset() or 0
                    error = msg.error()
                    if error is None:
                        key = msg.key() or b""
                        entry = json.loads(msg.value() or b"")
                        owned[partition].applied[key] = int(entry["offset"])
                        owned[partition].saved[key] = json.dumps(entry["state"], separators=(",", ":")).encode()
                    elif error.code() != KafkaError._PARTITION_EOF:
                        raise BackoutError(f"reading {self.changelog}[{partition}] failed: {error}")
                    if offset + 1 >= ends.get(partition, 0) or error is not None:
                        ends.pop(partition, None)
        finally:
            reader.close()

    def _create_changelog(self) -> None:
        create_topics(self.kafka, [TopicSpec(self.changelog, self.partitions, -1, compacted=True)], timeout_s=30)
        count = existing_topics(AdminClient(self.kafka.confluent()), timeout_s=30)[self.changelog]
        if count != self.partitions:
            raise BackoutError(f"{self.changelog} has {count} partitions, the metrics stage expects "
                               f"{self.partitions} (BACKOUT_PARTITIONS): a state would be read from the wrong "
                               "partition")

    # -- event time -------------------------------------------------------------------

    def _declare_idle(self, now: float) -> None:
        """A caught-up partition quiet for ``idle_after_s`` must not hold event time back."""
        assert self._consumer is not None
        for partition, owned in self._owned.items():
            last = self.telemetry.last_consumed(partition, default=now)
            if now - last < self.idle_after_s or owned.idle_at == last:
                continue
            tp = TopicPartition(topics.METRICS, partition)
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high is None or high < 0:
                continue  # the broker has not said yet
            position = owned.next_offset
            if position is None:  # nothing read since it was assigned: where the last owner got to
                committed = self._consumer.committed([tp], timeout=5)[0].offset
                position = committed if committed >= 0 else low
            if high > position:
                continue  # records are waiting: not idle
            owned.idle_at = last
            fallback = max((o.clock.max_ts for o in self._owned.values()), default=0.0) or time.time()
            self._send(owned.clock.idle(default_ts=fallback), topics.DECIDER)
