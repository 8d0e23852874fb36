"""Produce with retry: the one way Backout's code sends records to Kafka.

librdkafka already batches and retries inside ``message.timeout.ms``; what it
leaves to the caller is what this class does, once for the whole project:

* a full local queue (``BufferError``) is back-pressure, not an error: wait
  for the broker to drain it, count the wait, never warn per record;
* a record the broker refused after the producer's own retries (it was away,
  a leader moved) is sent again ``resend_s`` later, for as long as it takes;
* a refusal that sending again cannot help (too large, not authorised) is
  logged once, counted, and reported to the caller as done, so that nothing
  waits for it forever.

The caller learns that a record is on the broker (or given up) from
``on_done``; that is how the keyed-state runtime holds back a commit.

>>> class Recorder:
...     def __init__(self): self.sent = []
...     def produce(self, topic, value, key=None, partition=-1, on_delivery=None, timestamp=0):
...         self.sent.append((topic, value, key)); on_delivery(None, None)
...     def poll(self, timeout=0): return 0
>>> done = []
>>> sender = Sender(Recorder())
>>> sender.send("backout.alerts", b"{}", b"checkout", on_done=lambda: done.append(1))
>>> sender.producer.sent, done
([('backout.alerts', b'{}', b'checkout')], [1])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException

from backout.errors import BrokerError

log = logging.getLogger("backout.sender")
PERMANENT = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
                       KafkaError.TOPIC_AUTHORIZATION_FAILED})  # sending again cannot help
Done = Callable[[], None]


class ProducerLike(Protocol):
    """The part of confluent-kafka's ``Producer`` the runtime uses; tests pass their own."""

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None: ...

    def poll(self, *args: Any) -> int: ...


class Sender:
    """Sends records through ``producer``, retrying until each is on the broker or refused for good."""

    def __init__(self, producer: ProducerLike, resend_s: float = 1.0,
                 on_refused: Callable[[str], None] = lambda topic: None,
                 on_backpressure: Callable[[], None] = lambda: None) -> None:
        self.producer = producer
        self.resend_s = resend_s
        self.on_refused = on_refused
        self.on_backpressure = on_backpressure
        self.in_flight = 0
        self._resend: list[tuple[float, str, bytes | None, bytes | None, int, int, Done | None]] = []
        self._warned: set[str] = set()  # topics whose transient refusals were logged already

    def send(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int = -1,
             on_done: Done | None = None, timestamp_ms: int = 0) -> None:
        """Queue one record; ``partition`` -1 lets the partitioner choose by key, as every producer
        of these topics does. ``on_done`` runs once the broker has it, or refused it for good."""
        self.in_flight += 1
        callback = partial(self._delivered, topic, value, key, partition, timestamp_ms, on_done)
        while True:
            try:
                self.producer.produce(topic, value, key, partition=partition, on_delivery=callback,
                                      timestamp=timestamp_ms)
                return
            except BufferError:  # the local queue is full: let the broker catch up
                self.on_backpressure()
                self.producer.poll(0.05)
            except KafkaException as exc:  # refused before sending (too large): as a permanent refusal
                callback(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, str(exc)), None)
                return

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery reports and send again what is due."""
        self.producer.poll(timeout_s)
        if self._resend:
            now = time.monotonic()
            due = [r for r in self._resend if r[0] <= now]
            if due:
                self._resend = [r for r in self._resend if r[0] > now]
                for _, topic, value, key, partition, timestamp_ms, on_done in due:
                    self.in_flight -= 1  # send() counts it again
                    self.send(topic, value, key, partition, on_done, timestamp_ms)

    def flush(self, timeout_s: float | None = None, give_up: Callable[[], bool] = lambda: False) -> None:
        """Wait until everything sent is on the broker, through outages; raise :class:`BrokerError`
        when ``timeout_s`` passes (``None``: never) or ``give_up()`` says so."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.in_flight:
            self.poll(0.1)
            if self.in_flight and (give_up() or (deadline is not None and time.monotonic() > deadline)):
                raise BrokerError(f"{self.in_flight} records still unsent; is the broker up?")

    def _delivered(self, topic: str, value: bytes | None, key: bytes | None, partition: int, timestamp_ms: int,
                   on_done: Done | None, error: KafkaError | None, msg: Any) -> None:
        if error is not None and error.code() not in PERMANENT:
            if topic not in self._warned:
                log.warning("%s refused a record (%s); sending it again every %.0f s until it is taken",
                            topic, error, self.resend_s)
                self._warned.add(topic)
            landed = None if msg is None else msg.partition()
            if partition < 0 and landed is not None and landed >= 0:
                partition = landed  # where the partitioner put it: keeps the key's order
            self._resend.append((time.monotonic() + self.resend_s, topic, value, key, partition,
                                 timestamp_ms, on_done))
            return
        self.in_flight -= 1
        if error is not None:
            log.error("%s refused a record for good (%s): not sent", topic, error)
            self.on_refused(topic)
        else:
            self._warned.discard(topic)
        if on_done is not None:
            on_done()
