"""The worker's metrics stage: samples through one MetricMonitor per (service, metric).

A :class:`~streams.runtime.keyed.Stage` on the keyed-state runtime: the state
of a key is its monitor, saved to ``<app id>-monitors-changelog``; the step is
:meth:`~detectors.monitor.MetricMonitor.update`. An anomaly goes to
``backout.anomalies`` and to the decider topic; each partition's event-time
watermark (:class:`~detectors.watermark.PartitionClock`) goes to the decider
topic after the samples that moved it, and when the partition goes idle. A
sample far from its partition's event time (or, before the partition has
one, from its own Kafka timestamp) is refused by the clock before its monitor
sees it. A sample whose Kafka key is not its service is refused too: read on
another service's partition, its stream's state would be split between
workers. Before each sample, the monitor is offered its service's deploys
stamped at or before it (:mod:`streams.deploy_log`), as ``backout backtest``
hands them to it (:class:`~detectors.engine.Engine`), so that it opens its
deploy-anchored tests.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from backout.contracts import Anomaly, Metric, decode
from backout.errors import ContractError
from backout.settings import KafkaSettings
from detectors.config import BackoutConfig
from detectors.monitor import MetricMonitor
from detectors.watermark import PartitionClock
from streams import topics
from streams.deploy_log import DeployLog
from streams.runtime.keyed import Clients, KeyedConsumer, Output, Settings, Source, Telemetry
from streams.runtime.store import StateStore


@dataclass(frozen=True)
class Received:
    """A sample and what the event-time rules measure it against: its partition, its Kafka timestamp."""

    sample: Metric
    partition: int
    broker_ts: float | None


class MetricsStage:
    """Reads a metric sample, steps its monitor, keeps each partition's event-time clock."""

    def __init__(self, config: BackoutConfig, partitions: int, telemetry: Any,
                 deploys: DeployLog | None = None) -> None:
        self.config = config
        self.partitions = partitions
        self.telemetry = telemetry
        self.deploys = deploys or DeployLog(None)
        self._clocks: dict[int, PartitionClock] = {}

    def read(self, value: bytes | None, source: Source) -> tuple[bytes, Received]:
        sample: Metric = decode(value, expect=Metric)
        if source.key != sample.service.encode():  # on another service's partition its state would split
            raise ContractError(f"Kafka key: got {_key(source.key)}, expected the record's service "
                                f"{sample.service!r} ({topics.METRICS} is partitioned by service: produce with "
                                "key=service)")
        self.config.require_spec(sample.metric)
        return f"{sample.service}\x1f{sample.metric}".encode(), Received(sample, source.partition, source.timestamp_s)

    def step(self, monitor: MetricMonitor | None, received: Received) -> tuple[MetricMonitor, list[Output]]:
        sample = received.sample
        # the Kafka timestamp stands for the partition's event time until it has one (a new stream: no state)
        self._clocks[received.partition].admit(sample.ts, sample.service, sample.metric, new_stream=monitor is None,
                                               reference_ts=received.broker_ts)
        found: list[Anomaly] = []
        if monitor is None:
            monitor = MetricMonitor(sample.service, sample.metric, self.config.require_spec(sample.metric))
        else:  # a new stream has no history to judge a deploy against: the backtest offers it none either
            found += self._anchor(monitor, sample)
        anomaly = monitor.update(sample)  # DuplicateSample / OutOfOrderSample: refused, state untouched
        if monitor.warmed_up:
            self._clocks[received.partition].establish(sample.service)
        if anomaly is not None:
            found.append(anomaly)
        for a in found:
            self.telemetry.anomaly(a)
        return monitor, [(topic, a) for a in found for topic in (topics.ANOMALIES, topics.DECIDER)]

    def _anchor(self, monitor: MetricMonitor, sample: Metric) -> list[Anomaly]:
        """Open the anchored tests of the deploys of the sample's service that came before it
        (within the correlation window: an older one could not be blamed any more)."""
        found = []
        for mark in self.deploys.of(sample.service):
            if mark.ts <= sample.ts <= mark.ts + self.config.policy.window_s:
                anomaly = monitor.anchor(mark.deploy_id, mark.ts, mark.finished_ts)
                if anomaly is not None:
                    found.append(anomaly)
        return found

    def dump(self, monitor: MetricMonitor) -> bytes:
        return json.dumps(monitor.to_state(), separators=(",", ":")).encode()

    def load(self, key: bytes, raw: bytes) -> MetricMonitor:
        metric = key.partition(b"\x1f")[2].decode()
        return MetricMonitor.from_state(json.loads(raw), self.config.require_spec(metric))

    def after(self, partition: int, received: Received) -> list[Output]:
        mark = self._clocks[partition].observe(received.sample.ts)
        return [] if mark is None else [(topics.DECIDER, mark)]

    def idle(self, partition: int) -> list[Output]:
        fallback = max((c.max_ts for c in self._clocks.values()), default=0.0) or time.time()
        return [(topics.DECIDER, self._clocks[partition].idle(default_ts=fallback))]

    def before(self) -> None:
        self.deploys.drain()

    def assigned(self, partitions: list[int]) -> None:
        self.deploys.start()  # every deploy known before the first sample
        for partition in partitions:
            self._clocks[partition] = PartitionClock(partition, self.config.watermark_interval_s, self.partitions,
                                                     self.config.max_future_skew_s, self.config.max_lateness_s)

    def revoked(self, partitions: list[int]) -> None:
        for partition in partitions:
            self._clocks.pop(partition, None)


def _key(key: bytes | None) -> str:
    if key is None:
        return "none"
    return repr(key) if len(key) <= 80 else f"{key[:60]!r}… ({len(key)} bytes)"


def metrics_consumer(app_id: str, partitions: int, kafka: KafkaSettings, config: BackoutConfig,
                     telemetry: Telemetry, checkpoint_s: float = 5.0, idle_after_s: float = 10.0,
                     state_ttl_s: float = 900.0, max_keys: int = 20_000, clients: Clients | None = None,
                     store: StateStore | None = None) -> KeyedConsumer:
    """The metrics stage on the runtime, in the consumer group ``<app id>-monitor``."""
    settings = Settings(topic=topics.METRICS, group=f"{app_id}-monitor", changelog=f"{app_id}-monitors-changelog",
                        partitions=partitions, checkpoint_s=checkpoint_s, idle_after_s=idle_after_s,
                        state_ttl_s=state_ttl_s, max_keys=max_keys)
    stage = MetricsStage(config, partitions, telemetry, DeployLog(kafka))
    return KeyedConsumer(stage, settings, clients or Clients(kafka), telemetry, store)
