"""The worker's own health: Prometheus counters and consumer lag."""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    generate_latest,
)

from backout.contracts import Anomaly, Decision
from streams import topics


class Telemetry:
    """Counters for ``/metrics``; lag and rate are computed when scraped."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.registry = CollectorRegistry()
        # process_resident_memory_bytes (against the state cap) and process_start_time_seconds: the
        # counters below start at zero with the process, as Prometheus counters do (rate() and
        # increase() take a restart in their stride; the durable record is on the topics)
        ProcessCollector(registry=self.registry)
        self.records = Counter("backout_records_consumed", "Records consumed", ["topic"], registry=self.registry)
        self.anomalies = Counter("backout_anomalies", "Anomalies published", ["metric"], registry=self.registry)
        self.decisions = Counter("backout_decisions", "Decisions published", ["action"], registry=self.registry)
        self.refusals = Counter("backout_records_refused", "Output records the broker refused for good "
                                "(too large, not authorised)", ["topic"], registry=self.registry)
        self.dead_letters = Counter("backout_dead_letters", "Records sent to the dead letter topic", ["topic"],
                                    registry=self.registry)
        self.waits = Counter("backout_producer_buffer_waits", "Times a send waited for a full local producer "
                             "queue to drain (back-pressure)", registry=self.registry)
        self.live_states = Gauge("backout_live_states", "Keyed states held in memory (at most max_keys)", ["topic"],
                                 registry=self.registry)
        self.evictions = Counter("backout_states_evicted", "States that left memory after state_ttl_s without a "
                                 "record (kept on the changelog and in the local store)", ["topic"],
                                 registry=self.registry)
        self.capped = Counter("backout_state_cap_refusals", "Records dead-lettered because the stage held "
                              "max_keys states and not theirs", ["topic"], registry=self.registry)
        self.samples_per_s = Gauge("backout_samples_per_second", "Metric samples consumed per second since "
                                   "the previous scrape", registry=self.registry)
        self.lag = Gauge("backout_consumer_lag", "Records behind the partition's high watermark",
                         ["topic", "partition"], registry=self.registry)
        self._positions: dict[tuple[str, int], int] = {}
        self._highwaters: dict[tuple[str, int], int] = {}
        self._lag_lock = threading.Lock()
        self._samples = 0
        self._last_scrape = (time.monotonic(), 0)

    def consumed(self, topic: str, partition: int, next_offset: int, count: int = 1) -> None:
        """``count`` records of ``topic[partition]`` taken, up to ``next_offset``."""
        self.records.labels(topic).inc(count)
        self._positions[(topic, partition)] = next_offset
        if topic == topics.METRICS:
            self._samples += count

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

    def backpressure(self) -> None:
        self.waits.inc()

    def states(self, topic: str, live: int, evicted: int = 0, capped: int = 0) -> None:
        self.live_states.labels(topic).set(live)
        if evicted:
            self.evictions.labels(topic).inc(evicted)
        if capped:
            self.capped.labels(topic).inc(capped)

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
