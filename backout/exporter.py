"""Report a Python service's requests straight to Backout, without Prometheus or OpenTelemetry.

>>> from backout.exporter import Reporter
>>> reporter = Reporter(service="checkout")            # doctest: +SKIP
>>> reporter.observe_request(ok=True, latency_s=0.042)  # doctest: +SKIP

Observations are aggregated per ``interval_s`` (aligned to the clock, 10 s by
default) into ``requests`` (per second), ``error_rate`` and ``latency_p95``
(seconds), each with ``count`` = the requests behind it, and published to
``backout.metrics`` through the feeds' publish path by a background thread:
:meth:`observe_request` never blocks and never raises on the broker's
account. The same buffer rules hold: at most ``max_buffered`` records wait
for an absent broker; beyond that an interval's records are dropped and
counted (``dropped``), since a service cannot wait for its monitoring.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable

from backout.contracts import Metric
from backout.names import check
from backout.settings import KafkaSettings
from streams.feeds.parsed import Parsed
from streams.feeds.publish import Publisher

GAMMA = 1.02  # latency buckets grow by 2%: a p95 within 1% of the exact one, in constant memory


class RequestWindow:
    """Requests of one interval: how many, how many failed, and their latencies in log buckets.

    >>> w = RequestWindow()
    >>> for i in range(1, 101):
    ...     w.add(ok=i % 10 != 0, latency_s=i / 1000)
    >>> [(m.metric, round(m.value, 4), m.count) for m in w.records("checkout", ts=10.0, interval_s=10.0)]  # p95 exactly: 0.095
    [('requests', 10.0, 100.0), ('error_rate', 0.1, 100.0), ('latency_p95', 0.0957, 100.0)]
    """

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self._buckets: Counter[int] = Counter()

    def add(self, ok: bool, latency_s: float) -> None:
        self.requests += 1
        self.errors += not ok
        self._buckets[math.ceil(math.log(max(latency_s, 1e-9), GAMMA))] += 1

    def p95(self) -> float:
        rank, seen = 0.95 * self.requests, 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return float(GAMMA ** index * 2 / (1 + GAMMA))  # the bucket's middle
        raise ValueError("an empty window has no p95")

    def records(self, service: str, ts: float, interval_s: float) -> list[Metric]:
        n = float(self.requests)
        out = [Metric(ts=ts, service=service, metric="requests", value=n / interval_s, count=n)]
        if self.requests:
            out += [Metric(ts=ts, service=service, metric="error_rate", value=self.errors / n, count=n),
                    Metric(ts=ts, service=service, metric="latency_p95", value=self.p95(), count=n)]
        return out


class Reporter:
    """Aggregates one service's requests per interval and publishes them to Backout."""

    def __init__(self, service: str, interval_s: float = 10.0, settings: KafkaSettings | None = None,
                 max_buffered: int = 10_000, clock: Callable[[], float] = time.time,
                 publisher: Publisher | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.service = check("service", service)
        self.interval_s = interval_s
        self.clock = clock
        self.publisher = publisher or Publisher.connect(settings or KafkaSettings(), max_buffered)
        self._window = RequestWindow()
        self._started = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"backout-reporter-{service}", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> float:
        """Records not published because the buffer was full (the broker away too long)."""
        return self.publisher.counts.value("backout_feed_dropped_total", source=self._source, reason="buffer full")

    def observe_request(self, ok: bool, latency_s: float) -> None:
        with self._lock:
            self._window.add(ok, latency_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Publish the interval under way (its rate over the time it lasted) and stop."""
        self._stop.set()
        self._thread.join()
        now = self.clock()
        self._publish(now, max(now - self._started, 1e-3))
        self.publisher.close(timeout_s)

    @property
    def _source(self) -> str:
        return f"reporter:{self.service}"

    def _run(self) -> None:
        while True:
            end = (math.floor(self.clock() / self.interval_s) + 1) * self.interval_s
            if self._stop.wait(max(end - self.clock(), 0.0)):
                return
            self._publish(end, end - self._started if self._started > end - self.interval_s else self.interval_s)

    def _publish(self, ts: float, interval_s: float) -> None:
        with self._lock:
            window, self._window = self._window, RequestWindow()
            self._started = ts
        self.publisher.offer(Parsed(records=[*window.records(self.service, ts, interval_s)]), self._source)
