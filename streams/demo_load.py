"""The demo's users: a steady load of real HTTP requests through nginx, seen from outside.

A few threads share a fixed schedule of ``rate_per_s`` requests a second; each request is a
new connection to nginx (a reload never strands a kept-alive one), and its status, latency
and the version that answered (``X-Version``) are recorded twice: into the service's
:class:`~backout.exporter.Reporter`, which is how the metrics reach Backout, and into
per-second :class:`Traffic` counts, which the demo's timeline reads for its own account of
what users saw (the first errors after the deploy, the recovery).
"""

from __future__ import annotations

import http.client
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from backout.exporter import Reporter

TIMEOUT_S = 5.0


@dataclass
class Second:
    """What users saw during one wall-clock second."""

    requests: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    versions: Counter[str] = field(default_factory=Counter)
    error_versions: Counter[str] = field(default_factory=Counter)
    first_error_ts: dict[str, float] = field(default_factory=dict)  # per version


@dataclass(frozen=True)
class Seen:
    """A summary of some seconds of traffic."""

    requests: int
    errors: int
    p95_s: float | None
    versions: tuple[str, ...]  # the versions that answered, most requests first

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class Traffic:
    """Per-second counts of the requests sent, thread-safe."""

    def __init__(self) -> None:
        self._seconds: dict[int, Second] = {}
        self._lock = threading.Lock()

    def add(self, ts: float, ok: bool, latency_s: float, version: str) -> None:
        with self._lock:
            second = self._seconds.setdefault(int(ts), Second())
            second.requests += 1
            second.errors += not ok
            second.latencies_s.append(latency_s)
            second.versions[version] += 1
            if not ok:
                second.error_versions[version] += 1
                second.first_error_ts.setdefault(version, ts)

    def between(self, start_ts: float, end_ts: float) -> Seen:
        with self._lock:
            seconds = [s for t, s in self._seconds.items() if start_ts <= t < end_ts]
        latencies = sorted(x for s in seconds for x in s.latencies_s)
        versions: Counter[str] = sum((s.versions for s in seconds), Counter())
        p95 = latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)] if latencies else None
        return Seen(sum(s.requests for s in seconds), sum(s.errors for s in seconds), p95,
                    tuple(v for v, _ in versions.most_common()))

    def first_error(self, version: str, after_ts: float) -> tuple[float, Second] | None:
        """When ``version`` first answered an error at or after ``after_ts``, and that second's counts."""
        with self._lock:
            for t in sorted(self._seconds):
                first = self._seconds[t].first_error_ts.get(version)
                if t >= int(after_ts) and first is not None and first >= after_ts:
                    return first, self._seconds[t]
        return None


class LoadGenerator:
    """``rate_per_s`` GET requests a second to ``host:port``, reported to ``reporter``."""

    def __init__(self, host: str, port: int, rate_per_s: float, reporter: Reporter, threads: int = 8) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
        self.host = host
        self.port = port
        self.rate_per_s = rate_per_s
        self.reporter = reporter
        self.traffic = Traffic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0.0
        self._threads = [threading.Thread(target=self._run, name=f"demo-load-{i}", daemon=True)
                         for i in range(threads)]

    def start(self) -> LoadGenerator:
        self._next = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=TIMEOUT_S + 1)

    def _slot(self) -> float:
        """The next scheduled send time; a late schedule is not caught up in a burst."""
        with self._lock:
            now = time.monotonic()
            self._next = max(self._next + 1 / self.rate_per_s, now - 1 / self.rate_per_s)
            return self._next

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._stop.wait(max(self._slot() - time.monotonic(), 0.0)):
                return
            self._request()

    def _request(self) -> None:
        started = time.monotonic()
        version = "?"
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_S)
            try:
                conn.request("GET", "/", headers={"Connection": "close"})
                response = conn.getresponse()
                response.read()
                ok = response.status < 500
                version = response.getheader("X-Version") or "?"
            finally:
                conn.close()
        except OSError:  # refused, reset, timed out: the user saw an error
            ok = False
        latency_s = time.monotonic() - started
        self.reporter.observe_request(ok, latency_s)
        self.traffic.add(time.time(), ok, latency_s, version)
