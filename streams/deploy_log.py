"""Every deploy record, for the metrics stage: each monitor opens its deploy-anchored test from it.

The monitors of a service live on the worker that owns the service's metrics
partition, while the deploy agent reads ``backout.deploys`` in another
consumer group; so every worker reads every deploy record here, without a
group (a broadcast: deploys are a few a minute). The stage takes what
librdkafka has fetched meanwhile before each batch of samples, on its own
thread: a deploy published well before a sample (tens of milliseconds) is
known when the sample is stepped. The stage offers a
service's recent deploys to its monitor at each sample
(:meth:`~detectors.monitor.MetricMonitor.anchor` is idempotent per deploy),
only those stamped at or before the sample: a monitor sees each deploy, in
event time, where ``backout backtest`` would have read it, and a record read
late is tested against the samples already seen after it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from backout.contracts import Deploy, decode
from backout.errors import BackoutError, BrokerError
from backout.settings import KafkaSettings
from streams import topics

log = logging.getLogger("backout.deploys")
KEEP = 16  # deploy records remembered per service: far more than land within an anchored test's horizon


@dataclass(frozen=True)
class Mark:
    """One deploy record, as a monitor's anchored test takes it."""

    deploy_id: str
    ts: float
    finished_ts: float | None  # a finished record's ts: the rollout is over


def mark_of(deploy: Deploy) -> Mark | None:
    """The record as an anchored test takes it; ``None`` when it changes nothing the tests judge
    (a failed or rolled-back deploy, a redeploy of the same version)."""
    if deploy.status not in ("started", "finished") or deploy.version == deploy.previous_version:
        return None
    return Mark(deploy.deploy_id, deploy.ts, deploy.ts if deploy.status == "finished" else None)


class DeployLog:
    """Recent deploy records by service, read from ``backout.deploys`` on the stage's thread."""

    def __init__(self, kafka: KafkaSettings | None) -> None:
        self.kafka = kafka
        self._by_service: dict[str, tuple[Mark, ...]] = {}
        self._consumer: Consumer | None = None

    def add(self, deploy: Deploy) -> None:
        mark = mark_of(deploy)
        if mark is not None:
            marks = self._by_service.get(deploy.service, ())
            if mark not in marks:  # a redelivery
                self._by_service[deploy.service] = (*marks, mark)[-KEEP:]

    def of(self, service: str) -> tuple[Mark, ...]:
        return self._by_service.get(service, ())

    def start(self, timeout_s: float = 60.0) -> None:
        """Read the topic to its end, so that a restarted stage knows every deploy before its first
        sample; :meth:`drain` takes the rest as it comes. Idempotent."""
        if self._consumer is not None or self.kafka is None:
            return
        consumer = Consumer(self.kafka.confluent(**{"group.id": f"backout-deploy-log-{uuid.uuid4().hex[:8]}",
                                                    "enable.auto.commit": False, "enable.partition.eof": True,
                                                    "fetch.wait.max.ms": 10}))
        meta = consumer.list_topics(topics.DEPLOYS, timeout=timeout_s).topics.get(topics.DEPLOYS)
        if meta is None or meta.error is not None:
            consumer.close()
            raise BrokerError(f"{topics.DEPLOYS} is missing: run 'backout topics create' first")
        consumer.assign([TopicPartition(topics.DEPLOYS, p, OFFSET_BEGINNING) for p in meta.partitions])
        waiting = set(meta.partitions)
        while waiting:
            msg = consumer.poll(timeout_s)
            if msg is None:
                raise BrokerError(f"reading {topics.DEPLOYS} to its end took over {timeout_s:.0f} s")
            if self._take(msg):
                waiting.discard(msg.partition())
        self._consumer = consumer

    def drain(self) -> None:
        """Take every deploy record fetched since the last call (no wait)."""
        if self._consumer is not None:
            for msg in self._consumer.consume(1000, 0):
                self._take(msg)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _take(self, msg: object) -> bool:
        """Add one record; return whether it was the end of its partition."""
        error = msg.error()  # type: ignore[attr-defined]
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return True
            log.warning("reading %s: %s", topics.DEPLOYS, error)
            return False
        try:
            self.add(decode(msg.value(), expect=Deploy))  # type: ignore[attr-defined]
        except BackoutError:
            pass  # the deploy agent dead-letters it, with its reason
        return False
