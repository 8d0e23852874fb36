"""The worker's own health: Prometheus counters, consumer lag, and what it already decided."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from backout.contracts import Anomaly, Decision
from backout.settings import KafkaSettings
from streams import topics
from streams.kafka import read_to_end


class Telemetry:
    """Counters for ``/metrics``; lag and rate are computed when scraped."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.registry = CollectorRegistry()
        self.records = Counter("backout_records_consumed", "Records consumed", ["topic"], registry=self.registry)
        self.anomalies = Counter("backout_anomalies", "Anomalies published", ["metric"], registry=self.registry)
        self.decisions = Counter("backout_decisions", "Decisions published", ["action"], registry=self.registry)
        self.refusals = Counter("backout_records_refused", "Output records the broker refused for good "
                                "(too large, not authorised)", ["topic"], registry=self.registry)
        self.dead_letters = Counter("backout_dead_letters", "Records sent to the dead letter topic", ["topic"],
                                    registry=self.registry)
        self.samples_per_s = Gauge("backout_samples_per_second", "Metric samples consumed per second since "
                                   "the previous scrape", registry=self.registry)
        self.lag = Gauge("backout_consumer_lag", "Records behind the partition's high watermark",
                         ["topic", "partition"], registry=self.registry)
        self._positions: dict[tuple[str, int], int] = {}
        self._highwaters: dict[tuple[str, int], int] = {}
        self._lag_lock = threading.Lock()
        self._last_sample: dict[int, float] = {}  # metrics partition -> monotonic time of its last record
        self._samples = 0
        self._last_scrape = (time.monotonic(), 0)

    def consumed(self, topic: str, partition: int, next_offset: int, count: int = 1) -> None:
        """``count`` records of ``topic[partition]`` taken, up to ``next_offset``."""
        self.records.labels(topic).inc(count)
        self._positions[(topic, partition)] = next_offset
        if topic == topics.METRICS:
            self._samples += count
            self._last_sample[partition] = time.monotonic()

    def last_consumed(self, partition: int, default: float) -> float:
        """When a record of this metrics partition was last consumed (first asked: ``default``)."""
        return self._last_sample.setdefault(partition, default)

    def highwater(self, topic: str, partition: int, offset: int) -> None:
        """The end of a partition read outside Faust (the metrics stage), for the lag gauge."""
        self._highwaters[(topic, partition)] = offset

    def released(self, topic: str, partition: int) -> None:
        """Another worker owns this partition now: its lag is no longer ours to report."""
        with self._lag_lock:  # the metrics stage's thread calls this while /metrics may be scraped
            self._positions.pop((topic, partition), None)
            self._highwaters.pop((topic, partition), None)
            try:
                self.lag.remove(topic, str(partition))
            except KeyError:
                pass  # never reported

    def refused(self, topic: str) -> None:
        self.refusals.labels(topic).inc()

    def anomaly(self, anomaly: Anomaly) -> None:
        self.anomalies.labels(anomaly.metric).inc()

    def decision(self, decision: Decision) -> None:
        self.decisions.labels(decision.action).inc()

    def dead_letter(self, topic: str, reason: str) -> None:
        self.dead_letters.labels(topic).inc()

    def exposition(self) -> tuple[bytes, str]:
        now = time.monotonic()
        then, samples = self._last_scrape
        if now > then:
            self.samples_per_s.set((self._samples - samples) / (now - then))
        self._last_scrape = (now, self._samples)
        with self._lag_lock:
            for (topic, partition), position in list(self._positions.items()):  # the metrics stage adds keys
                highwater = self._highwater(topic, partition)
                if highwater is not None:
                    self.lag.labels(topic, str(partition)).set(max(0, highwater - position))
        return generate_latest(self.registry), "text/plain; version=0.0.4"  # aiohttp sets the charset

    def _highwater(self, topic: str, partition: int) -> int | None:
        from faust.types import TP

        ours = self._highwaters.get((topic, partition))
        if ours is not None:
            return ours
        try:
            value = self.app.consumer.highwater(TP(topic, partition))
        except Exception:  # consumer not started or partition not assigned any more
            return None
        return int(value) if value is not None else None


async def published_incidents(kafka: KafkaSettings, timeout_s: float = 20.0) -> set[tuple[str, str]]:
    """(incident id, action) pairs already on ``backout.actions``: a restarted decider never says one twice."""
    return await asyncio.to_thread(_read_incidents, kafka, timeout_s)


def _read_incidents(kafka: KafkaSettings, timeout_s: float) -> set[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    for msg in read_to_end(kafka, topics.ACTIONS, timeout_s=timeout_s):
        try:
            decision = json.loads(msg.value() or b"")
            seen.add((decision["incident_id"], decision["action"]))
        except (ValueError, KeyError, TypeError):
            pass  # not a decision; the actions topic may carry other tools' records
    return seen
