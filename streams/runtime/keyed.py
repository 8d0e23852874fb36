"""The keyed-state consumer: one topic in, a state per key, outputs out, nothing lost or doubled.

A stage supplies ``step(state | None, record) -> (state, outputs)`` and a few
hooks (:class:`Stage`); this runtime does the rest, the way a Faust table
would, but without a write per record and without stopping the stream to
checkpoint (Faust's own cost per event is what put the hot path here; see
the README):

* records are read in batches with confluent-kafka in the consumer group
  ``group``; a state that changed is written to the compacted changelog
  (same partition as its records) about ``checkpoint_s`` after it first
  changed, a few hundred per batch, with the offset of the last record in it;
* the committed offset never passes a record whose effects are not on the
  broker (:class:`~streams.runtime.ledger.Ledger`), and a state is written
  only once the outputs its records caused are acknowledged, so a state that
  says "alarmed" never outlives a lost anomaly;
* a worker given a partition reads that partition of the changelog first,
  then consumes from the committed offset, skipping a record at or below the
  offset its key's state already includes: a crash loses no record and counts
  none twice. Outputs of the last few seconds may be published again
  (at least once downstream);
* a record the stage refuses (:class:`~backout.errors.BackoutError`) is
  dead-lettered with the reason; a stage that raises anything else (a bug)
  has that key's state rebuilt from its last saved one, and the record is
  dead-lettered as an internal error;
* a caught-up partition quiet for ``idle_after_s`` is reported to the stage
  (:meth:`Stage.idle`), so that event time never waits for it;
* memory is bounded: a key without a record for ``state_ttl_s`` leaves
  memory (its state is on the changelog and in the local
  :class:`~streams.runtime.store.StateStore`, and is read back with the key's
  next record), and at most ``max_keys`` states are held at once: a record
  of any other key is dead-lettered until idle ones have left, counted, and
  an alert says so (once per ``cap_alert_s``);
* :attr:`KeyedConsumer.ready` is false until the consumer owns its
  partitions and has read their states back, and again during a rebalance.

Kafka is reached only through :class:`Clients`, so tests swap it as httpx's
transports are swapped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from backout.contracts import Alert, Record, dead_letter, encode
from backout.errors import BackoutError
from backout.settings import KafkaSettings
from streams import topics
from streams.admin import AdminClient, create_topics, existing_topics
from streams.kafka import read_to_end
from streams.runtime.ledger import Ledger
from streams.runtime.sender import Sender
from streams.runtime.store import StateStore
from streams.topics import TopicSpec

log = logging.getLogger("backout.runtime")
PRODUCER_QUEUE_KIB = 64 * 1024  # outputs and dead letters waiting for the broker, at most; then back-pressure
Output = tuple[str, Record]  # (topic, record); the key is the record's service


@dataclass(frozen=True)
class Source:
    """Where a record was read, for a stage to check it against: its Kafka key and timestamp."""

    partition: int
    offset: int
    key: bytes | None
    timestamp_s: float | None  # the Kafka timestamp; None when the record has none


class Stage(Protocol):
    """What a keyed stage supplies: how to read a record, the step, and how a state is stored."""

    def read(self, value: bytes | None, source: Source) -> tuple[bytes, Any]:
        """The record's state key and the record; raise a BackoutError to refuse it."""
        ...

    def step(self, state: Any | None, record: Any) -> tuple[Any, list[Output]]:
        """The new state and the outputs; raise a BackoutError to refuse the record (state untouched)."""
        ...

    def dump(self, state: Any) -> bytes: ...

    def load(self, key: bytes, raw: bytes) -> Any: ...

    def after(self, partition: int, record: Any) -> list[Output]:
        """Outputs owed to the partition rather than a key (a watermark), after each record used."""
        ...

    def idle(self, partition: int) -> list[Output]:
        """Outputs owed when a caught-up partition has gone quiet."""
        ...

    def before(self) -> None:
        """Before each batch: take what other inputs have brought meanwhile (the metrics stage's deploys)."""
        ...

    def assigned(self, partitions: list[int]) -> None: ...

    def revoked(self, partitions: list[int]) -> None: ...


class Telemetry(Protocol):
    def consumed(self, topic: str, partition: int, next_offset: int, count: int = 1) -> None: ...
    def highwater(self, topic: str, partition: int, offset: int) -> None: ...
    def released(self, topic: str, partition: int) -> None: ...
    def dead_letter(self, topic: str, reason: str) -> None: ...
    def refused(self, topic: str) -> None: ...
    def backpressure(self) -> None: ...
    def states(self, topic: str, live: int, evicted: int = 0, capped: int = 0) -> None: ...


class Clients:
    """How the runtime reaches Kafka. Swap it in tests; this one talks to a real broker."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka

    def consumer(self, **conf: Any) -> Any:
        return Consumer(self.kafka.confluent(**conf))

    def producer(self, **conf: Any) -> Any:
        return Producer(self.kafka.producer(**conf))

    def changelog(self, name: str, partitions: int) -> None:
        """Create the compacted changelog if missing; refuse one with another partition count."""
        create_topics(self.kafka, [TopicSpec(name, partitions, -1, compacted=True)], timeout_s=30)
        count = existing_topics(AdminClient(self.kafka.confluent()), timeout_s=30)[name]
        if count != partitions:
            raise BackoutError(f"{name} has {count} partitions, the stage expects {partitions} "
                               "(BACKOUT_PARTITIONS): a state would be read from the wrong partition")

    def restore(self, name: str, partitions: Iterable[int]) -> Iterable[tuple[int, bytes, bytes]]:
        """(partition, key, value) of the changelog's records, oldest first."""
        for msg in read_to_end(self.kafka, name, partitions, timeout_s=120):
            yield msg.partition() or 0, msg.key() or b"", msg.value() or b""


@dataclass(frozen=True)
class Settings:
    topic: str  # the input topic
    group: str  # consumer group, shared by the replicas
    changelog: str  # compacted topic of the states
    partitions: int  # of the input topic (the changelog has as many)
    checkpoint_s: float = 5.0  # a changed state is written about this long after it changed
    idle_after_s: float = 10.0  # a caught-up partition this long without a record is idle
    batch: int = 500  # records per consume call: ~15 ms of detector work
    saves: int = 500  # states written per loop at most: the same order of work
    commit_s: float = 1.0
    state_ttl_s: float = 900.0  # a key this long without a record leaves memory (wall seconds)
    max_keys: int = 20_000  # states held in memory at most; a record of another key is dead-lettered
    cap_alert_s: float = 300.0  # at most one alert this often while the cap refuses keys


class KeyedConsumer:
    """Runs one :class:`Stage` over ``settings.topic`` in a thread of its own."""

    def __init__(self, stage: Stage, settings: Settings, clients: Clients, telemetry: Telemetry,
                 store: StateStore | None = None) -> None:
        self.stage = stage
        self.settings = settings
        self.clients = clients
        self.telemetry = telemetry
        self.store = store or StateStore()
        self.on_failure: Callable[[BaseException], None] = lambda exc: None
        self._owned: dict[int, Ledger] = {}
        self._assigned = False  # True between an assignment (states read back) and the next rebalance
        self._capped_since_alert = 0
        self._next_cap_alert = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._next_commit = self._next_idle_check = float("-inf")
        self.sender: Sender | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"backout-{self.settings.group}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Checkpoint, leave the group and stop (a clean shutdown replays nothing)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def assigned(self) -> list[int]:
        return sorted(self._owned)

    @property
    def ready(self) -> bool:
        """It owns its share of the partitions and has read their states back."""
        return self._assigned

    def live_keys(self) -> int:
        return sum(len(ledger.live) for ledger in self._owned.values())

    def connect(self) -> None:
        """Create the changelog, the producer and the consumer, and join the group (the thread
        does this; a test drives :meth:`tick` by hand after it)."""
        self.clients.changelog(self.settings.changelog, self.settings.partitions)
        self.sender = Sender(self.clients.producer(**{
            "linger.ms": 5, "enable.idempotence": True, "batch.size": 1 << 19,
            "queue.buffering.max.messages": 500_000, "queue.buffering.max.kbytes": PRODUCER_QUEUE_KIB}),
            on_refused=self.telemetry.refused, on_backpressure=self.telemetry.backpressure)
        self._consumer = self.clients.consumer(**{
            "group.id": self.settings.group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, "fetch.wait.max.ms": 50,
            "enable.partition.eof": False})
        self._consumer.subscribe([self.settings.topic], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _run(self) -> None:
        try:
            self.connect()
            while not self._stop.is_set():
                self.tick(self.consume(), time.monotonic())
        except BaseException as exc:  # noqa: BLE001 - reported to the app, which stops the worker
            log.exception("the %s stage failed", self.settings.topic)
            self.on_failure(exc)
        finally:
            self.close()

    def consume(self, timeout_s: float = 0.05) -> list[Message]:
        """The next batch of records (empty when none came within ``timeout_s``)."""
        return self._consumer.consume(self.settings.batch, timeout_s)

    def tick(self, batch: list[Message], now: float) -> None:
        """One turn of the loop at monotonic time ``now``: step the batch, then what is due
        (delivery reports, state saves, a commit every ``commit_s``, idle checks every second)."""
        assert self.sender is not None
        if batch:
            self.take(batch, now)
        self.sender.poll(0)
        self.save_changed(now - self.settings.checkpoint_s)
        if now >= self._next_commit:
            self._commit(list(self._owned), asynchronous=True)
            self._next_commit = now + self.settings.commit_s
        if now >= self._next_idle_check:
            self._declare_idle(now)
            self._evict_idle(now)
            self._next_idle_check = now + 1.0

    def close(self) -> None:
        """Checkpoint and leave the group (the partitions move at once)."""
        if self._consumer is not None:
            try:
                self._checkpoint(list(self._owned))
                self._consumer.close()  # leaves the group: the partitions move at once
            except (KafkaException, BackoutError) as exc:
                log.warning("final checkpoint failed (%s); the next owner replays from the last one", exc)
            self._consumer = None

    # -- records -----------------------------------------------------------------------

    def take(self, batch: list[Message], now: float) -> None:
        """Step every record of ``batch`` (consumed at monotonic time ``now``) on its key's state."""
        self.stage.before()
        counts: dict[int, int] = {}
        for msg in batch:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", error)
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            ledger = self._owned.get(partition)
            if ledger is None:
                continue  # revoked while this batch was in flight: its next owner reads it
            self._record(msg, ledger, offset, now)
            ledger.read(offset, now)
            counts[partition] = counts.get(partition, 0) + 1
        for partition, count in counts.items():
            self.telemetry.consumed(self.settings.topic, partition, self._owned[partition].next_offset or 0, count)
            if self._consumer is not None:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(self.settings.topic, partition),
                                                               cached=True)
                if high is not None and high >= 0:
                    self.telemetry.highwater(self.settings.topic, partition, high)

    def _record(self, msg: Message, ledger: Ledger, offset: int, now: float) -> None:
        stage = self.stage
        kind, timestamp_ms = msg.timestamp()
        source = Source(ledger.partition, offset, msg.key(), timestamp_ms / 1000 if kind != TIMESTAMP_NOT_AVAILABLE else None)
        try:
            key, record = stage.read(msg.value(), source)
        except BackoutError as exc:
            self._dead_letter(msg, ledger, offset, str(exc))
            return
        state = ledger.live.get(key)
        applied = ledger.applied.get(key, -1)
        stored = None if state is not None else self.store.get(ledger.partition, key)
        if stored is not None:
            applied = stored[0]
        if offset <= applied:  # read again after a restart: its state includes it
            self._send_all(stage.after(ledger.partition, record), ledger, offset)
            return
        if state is None and self.live_keys() >= self.settings.max_keys:
            self._refuse_over_cap(msg, ledger, offset, key)
            return
        try:
            if stored is not None:
                state = stage.load(key, stored[1])
            state, outputs = stage.step(state, record)
        except BackoutError as exc:
            self._dead_letter(msg, ledger, offset, str(exc))
            return
        except Exception as exc:  # a bug in the stage must not stop the stream, nor lose the record
            log.exception("the stage failed on %s[%d]@%d", msg.topic(), ledger.partition, offset)
            ledger.forget(key)
            self._dead_letter(msg, ledger, offset, f"internal error: {exc!r}")
            return
        ledger.live[key] = state
        ledger.changed(key, offset, now)
        self._send_all(outputs, ledger, offset, key)
        self._send_all(stage.after(ledger.partition, record), ledger, offset)

    # -- output ------------------------------------------------------------------------

    def _send_all(self, outputs: list[Output], ledger: Ledger | None, offset: int, key: bytes | None = None) -> None:
        for topic, record in outputs:
            service = getattr(record, "service", None)
            self._send(topic, encode(record), service.encode() if service else None, ledger, offset, key)

    def _refuse_over_cap(self, msg: Message, ledger: Ledger, offset: int, key: bytes) -> None:
        settings = self.settings
        self.telemetry.states(settings.topic, self.live_keys(), capped=1)
        self._dead_letter(msg, ledger, offset, (
            f"state cap: this worker holds max_keys = {settings.max_keys} states (BACKOUT_MAX_KEYS) and key "
            f"{_shown(key)} is not one of them; its records are refused until idle keys leave memory "
            f"(state_ttl_s = {settings.state_ttl_s:g} s)"))
        self._capped_since_alert += 1
        now = time.monotonic()
        if now < self._next_cap_alert:
            return
        self._next_cap_alert = now + settings.cap_alert_s
        count, self._capped_since_alert = self._capped_since_alert, 0
        text = (f"The {settings.topic} stage is at its state cap ({settings.max_keys} keys held, BACKOUT_MAX_KEYS): "
                f"{count} record(s) of keys it does not hold were dead-lettered since the last alert. A flood of new "
                "names? See backout.deadletter; raise the cap only if the keys are real.")
        self._send(topics.ALERTS, encode(Alert(ts=time.time(), severity="warning", text=text)), None, None, -1)

    def _dead_letter(self, msg: Message, ledger: Ledger, offset: int, reason: str) -> None:
        topic = msg.topic() or ""
        self.telemetry.dead_letter(topic, reason)
        _, broker_ms = msg.timestamp()
        letter = dead_letter(msg.value(), reason, topic, ledger.partition, offset, broker_ms / 1000)
        self._send(topics.DEADLETTER, encode(letter), msg.key(), ledger, offset)

    def _send(self, topic: str, value: bytes, key: bytes | None, ledger: Ledger | None, offset: int,
              owner: bytes | None = None, partition: int = -1) -> None:
        """Send, holding back the commit of ``offset`` (and the next save of ``owner``'s state)
        until the broker has it."""
        assert self.sender is not None
        done = None
        if ledger is not None:
            ledger.hold(offset, owner)
            done = partial(ledger.release, offset, owner)
        self.sender.send(topic, value, key, partition, done)

    # -- state ------------------------------------------------------------------------

    def save_changed(self, changed_before: float, everything: bool = False) -> None:
        """Write the states that changed before ``changed_before`` (monotonic) and whose outputs are
        on the broker: the oldest first, ``saves`` at most unless ``everything``."""
        budget = self.settings.saves
        for ledger in list(self._owned.values()):
            ready = ledger.ready(float("inf") if everything else changed_before,
                                 len(ledger.dirty) if everything else budget)
            stored = []
            for key, first in ready:
                del ledger.dirty[key]
                state = self.stage.dump(ledger.live[key])
                stored.append((key, ledger.applied[key], state))
                entry = b'{"offset":%d,"state":%s}' % (ledger.applied[key], state)
                # owner=key: not saved again until this write is acknowledged, so a retried older
                # state can never land after a newer one
                self._send(self.settings.changelog, entry, key, ledger, first, owner=key, partition=ledger.partition)
            if stored:
                self.store.put(ledger.partition, stored)
            budget -= len(ready)

    def _evict_idle(self, now: float, budget: int = 20_000) -> None:
        """Keys idle for ``state_ttl_s`` leave memory; their saved state waits in the store."""
        evicted = 0
        for ledger in self._owned.values():
            for key in ledger.idle_keys(now - self.settings.state_ttl_s, budget - evicted):
                ledger.forget(key)
                evicted += 1
        self.telemetry.states(self.settings.topic, self.live_keys(), evicted=evicted)

    def _commit(self, partitions: list[int], asynchronous: bool) -> None:
        offsets = []
        for partition in partitions:
            ledger = self._owned[partition]
            position = ledger.committable()
            if position is not None and (position != ledger.committed or not asynchronous):
                offsets.append(TopicPartition(self.settings.topic, partition, position))
                ledger.committed = position
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)  # async: the next one covers a failure

    def _checkpoint(self, partitions: list[int]) -> None:
        """Before partitions are given away, or at shutdown: everything on the broker, then commit."""
        assert self.sender is not None
        give_up_at = time.monotonic() + 10.0

        def give_up() -> bool:  # through outages, unless stopping
            return self._stop.is_set() and time.monotonic() > give_up_at

        self.sender.flush(give_up=give_up)  # outputs first: a state must not say "alarmed" before its anomaly
        self.save_changed(time.monotonic(), everything=True)
        self.sender.flush(give_up=give_up)
        self._commit(partitions, asynchronous=False)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        owned = {tp.partition: Ledger(tp.partition) for tp in partitions}
        self.store.drop(owned)  # the changelog is the truth: read it again
        entries: dict[int, list[tuple[bytes, int, bytes]]] = {p: [] for p in owned}
        for partition, key, value in self.clients.restore(self.settings.changelog, list(owned)):
            offset, state = _entry(value)
            entries[partition].append((key, offset, state))
            if len(entries[partition]) >= 1000:
                self.store.put(partition, entries[partition])
                entries[partition] = []
        for partition, rest in entries.items():
            self.store.put(partition, rest)
        self._owned.update(owned)
        self.stage.assigned(sorted(owned))
        self._assigned = True
        log.info("%s partitions now %s", self.settings.topic, self.assigned())

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._assigned = False
        mine = [tp.partition for tp in partitions if tp.partition in self._owned]
        try:
            self._checkpoint(mine)
        finally:
            self._drop(mine)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Out of the group (session timed out): another worker may own them already; it must not
        see commits from here. Their next owner replays from the last commit."""
        self._assigned = False
        self._drop([tp.partition for tp in partitions if tp.partition in self._owned])
        log.warning("lost %s partitions %s; now %s", self.settings.topic,
                    sorted(tp.partition for tp in partitions), self.assigned())

    def _drop(self, partitions: list[int]) -> None:
        for partition in partitions:
            del self._owned[partition]
            self.telemetry.released(self.settings.topic, partition)
        self.store.drop(partitions)
        self.stage.revoked(partitions)

    # -- event time -------------------------------------------------------------------

    def _declare_idle(self, now: float) -> None:
        """A caught-up partition quiet for ``idle_after_s`` must not hold event time back."""
        for partition, ledger in self._owned.items():
            if ledger.last_read_s is None:
                ledger.last_read_s = now  # quiet since it was assigned
            last = ledger.last_read_s
            if now - last < self.settings.idle_after_s or ledger.idle_at_s == last:
                continue
            tp = TopicPartition(self.settings.topic, partition)
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high is None or high < 0:
                continue  # the broker has not said yet
            position = ledger.next_offset
            if position is None:  # nothing read since it was assigned: where the last owner got to
                committed = self._consumer.committed([tp], timeout=5)[0].offset
                position = committed if committed >= 0 else low
            if high > position:
                continue  # records are waiting: not idle
            ledger.idle_at_s = last
            self._send_all(self.stage.idle(partition), None, -1)


def _entry(value: bytes) -> tuple[int, bytes]:
    """A changelog record: the offset of the last input in the state, and the state as stored."""
    head, sep, rest = value.partition(b',"state":')
    if not sep or not head.startswith(b'{"offset":'):
        raise BackoutError(f"unreadable changelog record: {value[:80]!r}")
    return int(head[len(b'{"offset":'):]), rest[:-1]


def _shown(key: bytes) -> str:
    text = key.decode(errors="replace").replace("\x1f", "/")
    return repr(text if len(text) <= 80 else f"{text[:60]}… ({len(text)} chars)")
