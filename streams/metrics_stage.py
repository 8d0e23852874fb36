"""The worker's metrics stage: samples through one MetricMonitor per (service, metric).

A :class:`~streams.runtime.keyed.Stage` on the keyed-state runtime: the state
of a key is its monitor, saved to ``<app id>-monitors-changelog``; the step is
:meth:`~detectors.monitor.MetricMonitor.update`. An anomaly goes to
``backout.anomalies`` and to the decider topic; each partition's event-time
watermark (:class:`~detectors.watermark.PartitionClock`) goes to the decider
topic after the samples that moved it, and when the partition goes idle.
"""

from __future__ import annotations

import json
import time
from typing import Any

from backout.contracts import Metric, decode
from backout.settings import KafkaSettings
from detectors.config import BackoutConfig
from detectors.monitor import MetricMonitor
from detectors.watermark import PartitionClock
from streams import topics
from streams.runtime.keyed import Clients, KeyedConsumer, Output, Settings, Telemetry


class MetricsStage:
    """Reads a metric sample, steps its monitor, keeps each partition's event-time clock."""

    def __init__(self, config: BackoutConfig, partitions: int, telemetry: Any) -> None:
        self.config = config
        self.partitions = partitions
        self.telemetry = telemetry
        self._clocks: dict[int, PartitionClock] = {}

    def read(self, value: bytes | None) -> tuple[bytes, Metric]:
        sample: Metric = decode(value or b"", expect=Metric)
        self.config.require_spec(sample.metric)
        return f"{sample.service}\x1f{sample.metric}".encode(), sample

    def step(self, monitor: MetricMonitor | None, sample: Metric) -> tuple[MetricMonitor, list[Output]]:
        if monitor is None:
            monitor = MetricMonitor(sample.service, sample.metric, self.config.require_spec(sample.metric))
        anomaly = monitor.update(sample)  # DuplicateSample / OutOfOrderSample: refused, state untouched
        if anomaly is None:
            return monitor, []
        self.telemetry.anomaly(anomaly)
        return monitor, [(topics.ANOMALIES, anomaly), (topics.DECIDER, anomaly)]

    def dump(self, monitor: MetricMonitor) -> bytes:
        return json.dumps(monitor.to_state(), separators=(",", ":")).encode()

    def load(self, key: bytes, raw: bytes) -> MetricMonitor:
        metric = key.partition(b"\x1f")[2].decode()
        return MetricMonitor.from_state(json.loads(raw), self.config.require_spec(metric))

    def after(self, partition: int, sample: Metric) -> list[Output]:
        mark = self._clocks[partition].observe(sample.ts, sample.service)
        return [] if mark is None else [(topics.DECIDER, mark)]

    def idle(self, partition: int) -> list[Output]:
        fallback = max((c.max_ts for c in self._clocks.values()), default=0.0) or time.time()
        return [(topics.DECIDER, self._clocks[partition].idle(default_ts=fallback))]

    def assigned(self, partitions: list[int]) -> None:
        for partition in partitions:
            self._clocks[partition] = PartitionClock(partition, self.config.watermark_interval_s, self.partitions)

    def revoked(self, partitions: list[int]) -> None:
        for partition in partitions:
            self._clocks.pop(partition, None)


def metrics_consumer(app_id: str, partitions: int, kafka: KafkaSettings, config: BackoutConfig,
                     telemetry: Telemetry, checkpoint_s: float = 5.0, idle_after_s: float = 10.0,
                     clients: Clients | None = None) -> KeyedConsumer:
    """The metrics stage on the runtime, in the consumer group ``<app id>-monitor``."""
    settings = Settings(topic=topics.METRICS, group=f"{app_id}-monitor", changelog=f"{app_id}-monitors-changelog",
                        partitions=partitions, checkpoint_s=checkpoint_s, idle_after_s=idle_after_s)
    return KeyedConsumer(MetricsStage(config, partitions, telemetry), settings, clients or Clients(kafka), telemetry)
